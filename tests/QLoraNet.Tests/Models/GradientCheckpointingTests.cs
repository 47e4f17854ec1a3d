using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

[Trait("tier", "unit")]
public class GradientCheckpointingTests
{
    /// <summary>Gradients of trainable parameters inside the layers (here: the norm weights, unfrozen for the test)
    /// and of everything upstream must be the same with and without recomputation.</summary>
    [Fact]
    public void Checkpointed_layers_give_the_same_loss_and_gradients()
    {
        using var model = TinyLlamaFixture.Load();
        var trainable = model.named_parameters().Where(p => p.name.EndsWith("layernorm.weight")).Select(p => p.parameter).ToList();
        Assert.Equal(8, trainable.Count);
        foreach (var p in trainable) p.requires_grad = true;
        var ids = torch.tensor(new long[] { 1, 450, 29871, 29896, 29929, 1670, 4482, 322, 278, 3186, 338, 263 }).unsqueeze(0);

        (float loss, Tensor[] grads) Run(bool checkpointing)
        {
            model.Model.GradientCheckpointing = checkpointing;
            foreach (var p in trainable) p.grad = null;
            var loss = CausalLmLoss.Compute(model.forward(ids, null, null, null), ids);
            loss.backward();
            return (loss.item<float>(), trainable.Select(p => p.grad!.clone()).ToArray());
        }

        var plain = Run(false);
        var ckpt = Run(true);
        Assert.Equal(plain.loss, ckpt.loss);
        for (int i = 0; i < trainable.Count; i++)
        {
            Assert.True(plain.grads[i].abs().sum().item<float>() > 0, $"no gradient reached parameter {i}");
            Assert.True(plain.grads[i].allclose(ckpt.grads[i], rtol: 1e-5, atol: 1e-7), $"parameter {i} differs by {(plain.grads[i] - ckpt.grads[i]).abs().max().item<float>()}");
        }
    }
}
