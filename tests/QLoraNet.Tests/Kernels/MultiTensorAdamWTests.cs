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
}
