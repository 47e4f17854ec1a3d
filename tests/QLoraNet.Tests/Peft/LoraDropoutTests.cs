using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>LoRA dropout draws from an explicit random stream, and checkpointed layers replay it exactly.</summary>
[Trait("tier", "unit")]
public class LoraDropoutTests
{
    [Fact]
    public void Training_zeroes_about_p_and_scales_the_rest_to_keep_the_mean_and_eval_is_the_identity()
    {
        using var dropout = new LoraDropout(0.25, new RandomStream(11));
        using var x = torch.ones(400, 250);
        dropout.train();
        using var y = dropout.forward(x);
        double dropped = y.eq(0).sum().item<long>() / 100000.0;
        // 100000 Bernoulli(0.25) draws: standard deviation of the fraction 0.0014; 5 sigma.
        Assert.InRange(dropped, 0.25 - 0.007, 0.25 + 0.007);
        float survivor = 1 / 0.75f;
        Assert.True(y.eq(0).logical_or(y.sub(survivor).abs().lt(1e-6f)).all().item<bool>());
        dropout.eval();
        using var same = dropout.forward(x);
        Assert.True(Bits.Same(same, x));
    }

    [Fact]
    public void Masks_are_uniform_independent_bits_a_function_of_the_stream_alone()
    {
        var random = new RandomStream(7);
        using var a = random.KeepMask([1 << 16], 0.5, CPU);
        using var b = random.KeepMask([1 << 16], 0.5, CPU);
        // Fair and independent, also between neighbours and between consecutive draws: each fraction 0.5 +- 5 sigma
        // (sigma = 0.5 / sqrt(65536) = 0.002).
        double Fraction(Tensor t) => t.to(ScalarType.Float64).mean().item<double>();
        Assert.InRange(Fraction(a), 0.49, 0.51);
        Assert.InRange(Fraction(a.narrow(0, 0, 65535).eq(a.narrow(0, 1, 65535))), 0.49, 0.51);
        Assert.InRange(Fraction(a.eq(b)), 0.49, 0.51);

        torch.rand(1000).Dispose();                    // torch's process-wide generator moves; the stream must not care
        random.Reseed(7);
        using var again = random.KeepMask([1 << 16], 0.5, CPU);
        Assert.True(Bits.Same(a, again));
        random.Restore(new RandomStream.Position(7, 1));
        using var secondAgain = random.KeepMask([1 << 16], 0.5, CPU);
        Assert.True(Bits.Same(b, secondAgain));
        Assert.Equal(3277 / 65536.0, RandomStream.DropProbability(0.05));
    }

    /// <summary>
    /// The recomputation inside a checkpointed layer draws exactly the masks of the first forward: LoRA gradients
    /// with checkpointing equal those without (dropout 0.3), and afterwards the stream stands where the plain run
    /// left it (the replay does not rewind it for what comes next).
    /// </summary>
    [Fact]
    public void Checkpointed_layers_replay_the_dropout_masks_of_their_forward()
    {
        using var model = TinyLlamaFixture.Load();
        var random = new RandomStream();
        LoraApplier.Apply(model, new LoraSettings(R: 4, Alpha: 8, Dropout: 0.3, TargetModules: ["q_proj", "v_proj", "down_proj"]), seed: 1, dropoutRandom: random);
        var loras = AdapterFiles.LoraModules(model).Select(l => l.lora).ToList();
        using (torch.no_grad())
            foreach (var l in loras) l.B.copy_(torch.randn(l.B.shape, generator: new Generator(2)) * 0.1);  // B != 0: A gets gradients too
        var ids = torch.tensor(new long[] { 1, 450, 29871, 29896, 29929, 1670, 4482, 322, 278, 3186, 338, 263 }).unsqueeze(0);

        (Tensor[] Grads, RandomStream.Position After) Run(bool checkpointing, long seed)
        {
            model.Model.GradientCheckpointing = checkpointing;
            foreach (var l in loras) { l.A.grad = null; l.B.grad = null; }
            random.Reseed(seed);
            using (var scope = NewDisposeScope())
            {
                CausalLmLoss.Compute(model.forward(ids, null, null, null), ids).backward();
                model.BackwardHandles.Release();
            }
            return (loras.SelectMany(l => new[] { l.A.grad!.clone(), l.B.grad!.clone() }).ToArray(), random.State);
        }

        var plain = Run(false, 5);
        var ckpt = Run(true, 5);
        var otherMasks = Run(false, 6);
        for (int i = 0; i < plain.Grads.Length; i++)
        {
            // Same masks, same arithmetic: only the summation order differs (the checkpointed layers' explicit
            // backward sums input gradients inside the GEMMs), a few fp32 roundings of the gradient's largest entries.
            double scale = plain.Grads[i].abs().max().item<float>();
            double diff = (plain.Grads[i] - ckpt.Grads[i]).abs().max().item<float>();
            Assert.True(scale > 0 && diff <= 1e-5 * scale, $"gradient {i} differs by {diff:E2} (largest entry {scale:E2})");
        }
        Assert.Equal(plain.After, ckpt.After);
        Assert.Contains(Enumerable.Range(0, plain.Grads.Length), i => !plain.Grads[i].allclose(otherMasks.Grads[i], rtol: 1e-3, atol: 1e-6));
    }
}
