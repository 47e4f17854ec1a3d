using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>LoRA dropout draws from an explicit generator, and checkpointed layers replay it exactly.</summary>
[Trait("tier", "unit")]
public class LoraDropoutTests
{
    [Fact]
    public void Training_zeroes_about_p_and_scales_the_rest_by_one_over_one_minus_p_and_eval_is_the_identity()
    {
        using var g = new Generator(11);
        using var dropout = new LoraDropout(0.25, g, CPU);
        using var x = torch.ones(200, 100);
        dropout.train();
        using var y = dropout.forward(x);
        double zeros = y.eq(0).sum().item<long>() / 20000.0;
        // 20000 Bernoulli(0.25) draws: standard deviation of the fraction 0.0031; 5 sigma.
        Assert.InRange(zeros, 0.25 - 0.016, 0.25 + 0.016);
        Assert.True(y.eq(0).logical_or(y.eq(1 / 0.75f)).all().item<bool>());
        dropout.eval();
        using var same = dropout.forward(x);
        Assert.True(Bits.Same(same, x));
    }

    [Fact]
    public void The_mask_is_a_function_of_the_generator_state_alone()
    {
        using var g = new Generator(0);
        using var dropout = new LoraDropout(0.5, g, CPU);
        using var x = torch.ones(64);
        g.manual_seed(7);
        using var first = dropout.forward(x);
        torch.rand(1000).Dispose();   // torch's process-wide generator moves; ours must not care
        g.manual_seed(7);
        using var second = dropout.forward(x);
        using var third = dropout.forward(x);
        Assert.True(Bits.Same(first, second));
        Assert.False(Bits.Same(second, third));
    }

    /// <summary>
    /// The recomputation inside a checkpointed layer draws exactly the masks of the first forward: LoRA gradients
    /// with checkpointing equal those without (dropout 0.3), and afterwards the generator stands where the plain run
    /// left it (the replay does not rewind the stream for what comes next).
    /// </summary>
    [Fact]
    public void Checkpointed_layers_replay_the_dropout_masks_of_their_forward()
    {
        using var model = TinyLlamaFixture.Load();
        using var g = new Generator(0);
        LoraApplier.Apply(model, new LoraSettings(R: 4, Alpha: 8, Dropout: 0.3, TargetModules: ["q_proj", "v_proj", "down_proj"], Seed: 1), g);
        var loras = AdapterFiles.LoraModules(model).Select(l => l.lora).ToList();
        using (torch.no_grad())
            foreach (var l in loras) l.B.copy_(torch.randn(l.B.shape, generator: new Generator(2)) * 0.1);  // B != 0: A gets gradients too
        var ids = torch.tensor(new long[] { 1, 450, 29871, 29896, 29929, 1670, 4482, 322, 278, 3186, 338, 263 }).unsqueeze(0);

        (Tensor[] Grads, byte[] After) Run(bool checkpointing, long seed)
        {
            model.Model.GradientCheckpointing = checkpointing;
            foreach (var l in loras) { l.A.grad = null; l.B.grad = null; }
            g.manual_seed(seed);
            using (var scope = NewDisposeScope())
            {
                CausalLmLoss.Compute(model.forward(ids, null, null, null), ids).backward();
                model.BackwardHandles.Release();
            }
            using var state = g.get_state();
            return (loras.SelectMany(l => new[] { l.A.grad!.clone(), l.B.grad!.clone() }).ToArray(), state.data<byte>().ToArray());
        }

        var plain = Run(false, 5);
        var ckpt = Run(true, 5);
        var otherMasks = Run(false, 6);
        for (int i = 0; i < plain.Grads.Length; i++)
        {
            // Same masks, same arithmetic: only the recomputation's summation order could differ (fp32, ~1e-7 relative).
            Assert.True(plain.Grads[i].allclose(ckpt.Grads[i], rtol: 1e-5, atol: 1e-7),
                $"gradient {i} differs by {(plain.Grads[i] - ckpt.Grads[i]).abs().max().item<float>()}");
        }
        Assert.Equal(plain.After, ckpt.After);
        Assert.Contains(Enumerable.Range(0, plain.Grads.Length), i => !plain.Grads[i].allclose(otherMasks.Grads[i], rtol: 1e-3, atol: 1e-6));
    }
}
