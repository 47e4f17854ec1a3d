using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>
/// The explicit layer backward (no autograd graph in the recomputation) against the autograd recomputation, its
/// reference, on every family fixture: the same loss and the same adapter gradients up to fp32 rounding. The two sum
/// the input gradients of q/k/v and of gate/up in different orders (inside the GEMM against after it), so
/// equality is to a few fp32 roundings of each gradient's largest entries: rtol 1e-4 of the larger magnitude
/// (forty tokens, sums of a few hundred products), far below any wrong term, which would be of the gradient's own size.
/// </summary>
[Trait("tier", "unit")]
public class ExplicitLayerBackwardTests
{
    /// <summary>Families whose layers the explicit backward takes; Gemma 2 (post-norms) keeps autograd.</summary>
    static readonly string[] Explicit = ["llama3", "mistral", "qwen2", "gemma"];

    static (float Loss, Tensor[] Grads, long Explicit, long Autograd) Run(string family, BaseFormat format, double dropout,
        bool explicitBackward, bool keepWeights)
    {
        using var built = FamilyLora.Build(family, format, FamilyLora.AllLinear with { Dropout = dropout }, checkpointing: true);
        var layers = built.Model.modules().OfType<LlamaDecoderLayer>().ToList();
        foreach (var layer in layers)
        {
            layer.ExplicitBackward = explicitBackward;
            layer.KeepWeightsForBackward = keepWeights;
        }
        built.Model.train();
        var (loss, grads) = FamilyLora.LossAndAdapterGradients(built.Model, FamilyReference.Of(family).HeldoutIds.Take(40).ToArray());
        return (loss, grads, layers.Sum(l => l.BackwardCounts.Explicit), layers.Sum(l => l.BackwardCounts.Autograd));
    }

    static void AssertClose(string what, Tensor[] expected, Tensor[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double scale = Math.Max(expected[i].abs().max().item<float>(), 1e-30);
            double diff = (expected[i] - actual[i]).abs().max().item<float>();
            Assert.True(expected[i].abs().sum().item<float>() > 0, $"{what}: gradient {i} is zero");
            Assert.True(diff <= 1e-4 * scale, $"{what}: gradient {i} differs by {diff:E2} (largest entry {scale:E2})");
        }
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void The_explicit_backward_gives_autograds_gradients_on_every_family(string family)
    {
        var reference = Run(family, FamilyLora.Dense, 0, explicitBackward: false, keepWeights: false);
        var explicitRun = Run(family, FamilyLora.Dense, 0, explicitBackward: true, keepWeights: true);
        Assert.Equal(reference.Loss, explicitRun.Loss);
        Assert.Equal(0, reference.Explicit);
        bool takes = Explicit.Contains(family);
        Assert.Equal(takes ? 0 : reference.Autograd, explicitRun.Autograd);
        Assert.Equal(takes ? reference.Autograd : 0, explicitRun.Explicit);
        AssertClose(family, reference.Grads, explicitRun.Grads);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void With_dropout_and_an_nf4_base_the_masks_and_gradients_are_autograds(bool keepWeights)
    {
        var format = BaseFormat.Parse("nf4-dq");
        var reference = Run("llama3", format, 0.25, explicitBackward: false, keepWeights: false);
        var explicitRun = Run("llama3", format, 0.25, explicitBackward: true, keepWeights: keepWeights);
        Assert.Equal(reference.Loss, explicitRun.Loss);
        Assert.True(explicitRun.Explicit > 0 && explicitRun.Autograd == 0);
        AssertClose("llama3 nf4-dq, dropout 0.25", reference.Grads, explicitRun.Grads);
    }

    [Fact]
    public void A_trainable_norm_keeps_the_autograd_recomputation()
    {
        using var built = FamilyLora.Build("llama3", FamilyLora.Dense, FamilyLora.AllLinear, checkpointing: true);
        var layer = built.Model.modules().OfType<LlamaDecoderLayer>().First();
        Assert.True(ExplicitLayerBackward.Supports(layer, ScalarType.Float32));
        Assert.False(ExplicitLayerBackward.Supports(layer, ScalarType.BFloat16));   // the linears compute in fp32
        layer.Norm(NormRole.PreMlp)!.Weight.requires_grad = true;
        Assert.False(ExplicitLayerBackward.Supports(layer, ScalarType.Float32));
    }
}
