using QLoraNet.Kernels;
using QLoraNet.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>The multi-tensor AdamW's reference (what the CUDA kernel mirrors, and its CPU path) against the
/// trainer's AdamW, bit for bit over several steps with weight decay.</summary>
[Trait("tier", "unit")]
public class MultiTensorAdamWTests
{
    static readonly long[][] Shapes = [[16, 24], [24, 16], [7], [1]];

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.01)]
    public void Reference_and_instance_step_equal_the_trainer_AdamW_bit_for_bit(double weightDecay)
    {
        using var scope = NewDisposeScope();
        const double lr = 3e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
        var ours = Shapes.Select((s, i) => Randn(s, ScalarType.Float32, 10 + i).requires_grad_(true)).ToArray();
        var theirs = ours.Select(p => p.detach().clone().requires_grad_(true)).ToArray();
        var moments = ours.Select(p => (zeros_like(p), zeros_like(p))).ToArray();
        var trainer = new AdamW(theirs.Select((p, i) => ($"p{i}", p)), lr, beta1, beta2, eps, weightDecay);
        using var fused = new MultiTensorAdamW(Cpu.AdamW);
        for (int step = 1; step <= 4; step++)
        {
            for (int i = 0; i < ours.Length; i++)
            {
                var g = Randn(ours[i].shape, ScalarType.Float32, 100 * step + i, 0.1);
                using (no_grad()) { theirs[i].grad = g.clone(); }
                ours[i].grad = g.clone();
            }
            trainer.StepOnce();
            var slots = ours.Select((p, i) => new MultiTensorAdamW.Slot(p, p.grad!, moments[i].Item1, moments[i].Item2)).ToList();
            var hyper = new MultiTensorAdamW.Hyper(lr, beta1, beta2, eps, weightDecay, step);
            if (step % 2 == 1) MultiTensorAdamW.ReferenceStep(slots, hyper);
            else fused.Step(slots, hyper); // the instance's CPU path is the reference
            for (int i = 0; i < ours.Length; i++) AssertIdentical(ours[i].detach(), theirs[i].detach(), $"step {step}, parameter {i}");
        }
        var (state, count) = trainer.Save();
        Assert.Equal(4, count);
        for (int i = 0; i < ours.Length; i++)
        {
            AssertIdentical(moments[i].Item1, state[$"p{i}.exp_avg"], $"exp_avg {i}");
            AssertIdentical(moments[i].Item2, state[$"p{i}.exp_avg_sq"], $"exp_avg_sq {i}");
        }
    }

    [Fact]
    public void An_empty_step_changes_nothing()
    {
        using var fused = new MultiTensorAdamW(Cpu.AdamW);
        fused.Step([], new MultiTensorAdamW.Hyper(1e-3, 0.9, 0.999, 1e-8, 0, 1));
    }

    /// <summary>The train step's guard on the host path: a non-finite loss sum or norm skips the update (nothing
    /// changes); a finite one clips each gradient by <see cref="MultiTensorAdamW.ClipCoefficient"/> before the
    /// update, which is then the reference's on the clipped gradients, bit for bit.</summary>
    [Theory]
    [InlineData(float.NaN, 2f, "Skipped")]
    [InlineData(1f, float.PositiveInfinity, "Skipped")]
    [InlineData(1f, 40f, "Applied")]
    [InlineData(1f, 0.25f, "Applied")]
    public void The_guard_skips_a_non_finite_step_and_clips_to_the_norm(float lossSum, float norm, string expected)
    {
        using var scope = NewDisposeScope();
        var hyper = new MultiTensorAdamW.Hyper(3e-3, 0.9, 0.999, 1e-8, 0.01, 2);
        (Tensor P, Tensor G, Tensor M, Tensor V)[] Fresh() => Shapes.Select((s, i) => (Randn(s, ScalarType.Float32, 10 + i),
            Randn(s, ScalarType.Float32, 20 + i, 0.1), Randn(s, ScalarType.Float32, 30 + i, 1e-3), Randn(s, ScalarType.Float32, 40 + i, 1e-3).abs())).ToArray();
        List<MultiTensorAdamW.Slot> Slots((Tensor P, Tensor G, Tensor M, Tensor V)[] t) => t.Select(x => new MultiTensorAdamW.Slot(x.P, x.G, x.M, x.V)).ToList();
        var guarded = Fresh();
        var before = Fresh();
        using var fused = new MultiTensorAdamW(Cpu.AdamW);
        var result = fused.Step(Slots(guarded), hyper, new MultiTensorAdamW.Guard(tensor(new[] { lossSum, norm }), MaxNorm: 1.0));
        Assert.Equal(expected, result.ToString());
        var want = Fresh();
        if (expected == "Applied")
        {
            float clip = MultiTensorAdamW.ClipCoefficient(norm, 1.0);
            Assert.Equal(norm > 1 ? 1f / (norm + 1e-6f) : 1f, clip);
            foreach (var w in want) w.G.mul_(clip);
            MultiTensorAdamW.ReferenceStep(Slots(want), hyper);
        }
        for (int i = 0; i < Shapes.Length; i++)
        {
            AssertIdentical(guarded[i].P, want[i].P, $"param {i}");
            AssertIdentical(guarded[i].M, want[i].M, $"exp_avg {i}");
            AssertIdentical(guarded[i].V, want[i].V, $"exp_avg_sq {i}");
            AssertIdentical(guarded[i].G, before[i].G, $"grad {i} is read, not clipped in place");
        }
        if (expected == "Applied") Assert.False(QLoraNet.Tests.Peft.Bits.Same(guarded[0].P, before[0].P), "the update must have moved the parameters");
    }

    /// <summary>clip_grad_norm_'s coefficient max / (norm + 1e-6), capped at 1, in fp32: within fp32's rounding of
    /// the exact value (two roundings: the sum and the quotient, each at most half an ulp).</summary>
    [Theory]
    [InlineData(3.7f, 1.0)]
    [InlineData(1e4f, 0.3)]
    [InlineData(0.9f, 1.0)]
    public void The_clip_coefficient_is_clip_grad_norms(float norm, double maxNorm)
    {
        double exact = Math.Min(1, maxNorm / (norm + 1e-6));
        float c = MultiTensorAdamW.ClipCoefficient(norm, maxNorm);
        Assert.True(Math.Abs(c - exact) <= exact * 2 * Math.Pow(2, -24) * 1.01, $"{c} vs {exact}");
        Assert.Equal(1f, MultiTensorAdamW.ClipCoefficient(norm, 0));
        Assert.Equal(1f, MultiTensorAdamW.ClipCoefficient(norm, double.PositiveInfinity));
    }
}
