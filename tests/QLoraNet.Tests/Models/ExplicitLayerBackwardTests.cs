using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Tests.Peft;
using QLoraNet.Tests.Quant;
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
        bool explicitBackward, bool keepWeights, LoraSettings? lora = null, bool stackGateUp = false, bool mlpStacks = true)
    {
        using var built = FamilyLora.Build(family, format, (lora ?? FamilyLora.AllLinear) with { Dropout = dropout }, checkpointing: true);
        if (stackGateUp) StackGateUp(built);
        var layers = built.Model.modules().OfType<LlamaDecoderLayer>().ToList();
        foreach (var layer in layers)
        {
            layer.ExplicitBackward = explicitBackward;
            layer.KeepWeightsForBackward = keepWeights;
            layer.Mlp.StackFrozenGateUp = mlpStacks;
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

    /// <summary>training.keep_dequantized_weights reaches every decoder layer through the model builder (default: kept).</summary>
    [Fact]
    public void The_builder_sets_whether_each_layer_keeps_its_dequantized_weights()
    {
        var format = BaseFormat.Parse("nf4");
        using var kept = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, format, GradientCheckpointing: true));
        using var again = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, format, GradientCheckpointing: true,
            KeepDequantizedWeights: false));
        Assert.All(kept.Model.modules().OfType<LlamaDecoderLayer>(), l => Assert.True(l.KeepWeightsForBackward));
        var layers = again.Model.modules().OfType<LlamaDecoderLayer>().ToList();
        Assert.NotEmpty(layers);
        Assert.All(layers, l => Assert.False(l.KeepWeightsForBackward));
    }

    /// <summary>Every layer's frozen gate and up made to stack into one GEMM as the CUDA NF4 kernel lets them
    /// (<see cref="StackingLinear"/>), pointed at the model's backward queue like the linears they wrap.</summary>
    static void StackGateUp(BuiltModel built)
    {
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        foreach (var mlp in built.Model.modules().OfType<LlamaMlp>().ToList())
            foreach (var name in new[] { "gate_proj", "up_proj" })
            {
                var wrapped = new StackingLinear((FrozenLinear)mlp.Projections[name]);
                wrapped.DeferBackwardHandlesTo(decoder.BackwardHandles);
                mlp.Projections.Replace(name, wrapped);
            }
    }

    /// <summary>Adapters on the attention only over an NF4 base: the MLP's gate and up are frozen and run as one GEMM
    /// (Quant.FrozenLinearGroup) in the forward and the recomputation, their outputs two views of its product, which the
    /// gated unit and the explicit backward read as they are; the gradients are still autograd's (whose graph keeps
    /// one product per linear).</summary>
    [Theory]
    [InlineData("llama3")]
    [InlineData("gemma")]
    public void With_frozen_gate_and_up_as_one_gemm_the_gradients_are_autograds(string family)
    {
        var format = BaseFormat.Parse("nf4-dq");
        var attention = FamilyLora.AllLinear with { TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] };
        var reference = Run(family, format, 0, explicitBackward: false, keepWeights: false, attention);
        foreach (bool keep in new[] { true, false })
        {
            var explicitRun = Run(family, format, 0, explicitBackward: true, keepWeights: keep, attention, stackGateUp: true);
            Assert.Equal(0, explicitRun.Autograd);
            Assert.True(Math.Abs(reference.Loss - explicitRun.Loss) <= 1e-5 * Math.Abs(reference.Loss), $"loss {reference.Loss} against {explicitRun.Loss}");
            AssertClose($"{family} nf4-dq, attention adapters, keep {keep}", reference.Grads, explicitRun.Grads);
        }
        // Memory first (training.keep_dequantized_weights: false): gate and up one at a time, the same gradients.
        var apartRun = Run(family, format, 0, explicitBackward: true, keepWeights: false, attention, stackGateUp: true, mlpStacks: false);
        Assert.True(Math.Abs(reference.Loss - apartRun.Loss) <= 1e-5 * Math.Abs(reference.Loss), $"loss {reference.Loss} against {apartRun.Loss}");
        AssertClose($"{family} nf4-dq, attention adapters, gate and up apart", reference.Grads, apartRun.Grads);

        using var built = FamilyLora.Build(family, format, attention, checkpointing: true);
        StackGateUp(built);
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        var layer = decoder.Layers.First();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long t = 12, hidden = decoder.EmbedTokens.Weight.shape[1];
        var x = randn([1, t, hidden], generator: new Generator(7));                          // (1, T, hidden)
        var (cos, sin) = decoder.Rotary.call(arange(t).unsqueeze(0));
        using var tape = ExplicitLayerBackward.Record(layer, x, cos, sin, null, keepWeights: true, output: false).Tape;
        var (gate, up) = (tape.GateUp!.Members[0].Output!, tape.GateUp.Members[1].Output!);
        Assert.Equal(2 * gate.size(-1), gate.stride(1));                                     // halves of one (.., 2I) product
        Assert.Equal(gate.size(-1), up.storage_offset() - gate.storage_offset());

        layer.Mlp.StackFrozenGateUp = false;                                                 // one at a time
        using var apart = ExplicitLayerBackward.Record(layer, x, cos, sin, null, keepWeights: false, output: false).Tape;
        var gateApart = apart.GateUp!.Members[0].Output!;
        Assert.Equal(gateApart.size(-1), gateApart.stride(1));                               // a product of its own
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
