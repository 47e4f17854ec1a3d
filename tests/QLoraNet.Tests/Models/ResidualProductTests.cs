using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Models;

/// <summary>
/// The decoder layer's h + down(gated) without an autograd graph is one GEMM with the residual as its C matrix
/// (<see cref="ResidualProduct"/>, <see cref="LinearSlots.CallAdding"/>) where down is a bare frozen linear: the sum
/// is exactly torch.addmm(h, gated, W_downᵀ), and within one bf16 rounding step of the old product-then-add (which
/// rounds twice, so the two differ somewhere: that is what tells the paths apart); a kept record makes it the same
/// way bit for bit. With LoRA on down, or under autograd, the old add is used, bit for bit.
/// On the llama3 fixture with an NF4 base computing in bf16 (CPU).
/// </summary>
[Trait("tier", "unit")]
public class ResidualProductTests
{
    static readonly LoraSettings AttentionOnly = new(R: 4, Alpha: 8, Dropout: 0, TargetModules: ["q_proj", "v_proj"]);
    static readonly LoraSettings DownToo = AttentionOnly with { TargetModules = ["q_proj", "v_proj", "down_proj"] };

    static BuiltModel Build(LoraSettings lora, ScalarType dtype = ScalarType.BFloat16, bool checkpointing = false) =>
        ModelBuilder.Build(FamilyReference.DirOf("llama3"), new ModelBuildOptions(CPU, dtype, BaseFormat.Parse("nf4"),
            NewAdapter: lora, AdapterSeed: 5, GradientCheckpointing: checkpointing));

    /// <summary>The llama3 fixture's hidden size.</summary>
    const long Hidden = 128;

    static LlamaDecoderLayer LastLayer(BuiltModel built) => built.Model.modules().OfType<LlamaDecoderLayer>().Last();

    /// <summary>(x, h): the MLP's input and a residual stream, (1, T, hidden) in bf16 each.</summary>
    static (Tensor X, Tensor H) Inputs(long hidden, long t = 24)
    {
        var generator = new Generator(3);
        return (randn([1, t, hidden], generator: generator).to(ScalarType.BFloat16),
                randn([1, t, hidden], generator: generator).mul_(4).to(ScalarType.BFloat16));
    }

    static bool Identical(Tensor a, Tensor b) => a.dtype == b.dtype && a.equal(b).all().item<bool>();

    static float MaxDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to(ScalarType.Float32) - b.to(ScalarType.Float32)).abs().max().item<float>();
    }

    /// <summary>bf16's unit roundoff: 8 significant bits, so rounding moves a value by at most 2^-8 of it.</summary>
    static readonly double Bf16Step = Math.Pow(2, -8);

    /// <summary>
    /// The product-then-add against the fused sum, elementwise: the old path rounds the product (by at most 2^-8 of
    /// |product|) and then its sum, the fused path rounds its sum only, each sum's rounding at most 2^-8 of it; so they
    /// differ by at most one bf16 step of the output (two half steps, when the two land on either side of a tie) plus
    /// the product's rounding.
    /// </summary>
    static void AssertWithinOneRounding(Tensor product, Tensor twoOps, Tensor fused)
    {
        using var scope = NewDisposeScope();
        var (p, a, b) = (product.to(ScalarType.Float32), twoOps.to(ScalarType.Float32), fused.to(ScalarType.Float32));
        var bound = (p.abs() + a.abs() + b.abs()).mul(Bf16Step).clamp_min(1e-30);
        var ratio = (a - b).abs().div(bound).max().item<float>();
        Assert.True(ratio <= 1f, $"the sums differ by {ratio:F2} of the product's and the sums' roundings");
    }

    /// <summary>Whole tensors within one bf16 rounding step: ‖a - b‖ ≤ 2^-8·‖b‖ (a layer's outputs, whose elementwise
    /// bound needs the products inside it).</summary>
    static void AssertCloseInNorm(Tensor expected, Tensor actual)
    {
        using var scope = NewDisposeScope();
        var (e, a) = (expected.to(ScalarType.Float32), actual.to(ScalarType.Float32));
        double relative = (e - a).norm().item<float>() / e.norm().item<float>();
        Assert.True(relative <= Bf16Step, $"relative difference {relative:E2} is above one bf16 step ({Bf16Step:E2})");
    }

    [Fact]
    public void Without_a_graph_the_residual_is_the_down_projections_gemm_c_matrix()
    {
        using var built = Build(AttentionOnly);
        var mlp = LastLayer(built).Mlp;
        var down = Assert.IsType<FourBitLinear>(mlp.Projections["down_proj"]);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (x, h) = Inputs(down.OutFeatures);

        var fused = mlp.ForwardAdding(x, h);                                                     // (1, T, hidden)
        // The same sum by hand: gated as the MLP makes it on the CPU (the torch-op gated unit), then one addmm.
        var gated = F.silu(mlp.Projections.Call(LinearRole.Gate, x)) * mlp.Projections.Call(LinearRole.Up, x); // (1, T, intermediate)
        Assert.True(down.AddsInProduct(gated, h));
        Assert.False(down.AddsInProduct(gated, h.to(ScalarType.Float32)));                      // addmm would not promote
        var w = down.DequantizeWeight(ScalarType.BFloat16);                                      // (hidden, intermediate)
        var byHand = addmm(h.reshape(-1, down.OutFeatures), gated.reshape(-1, down.InFeatures), w.t(), beta: 1, alpha: 1).view_as(h);
        Assert.True(Identical(byHand, fused), $"differs from addmm by {MaxDiff(byHand, fused):E2}");

        // The old path rounds the product to bf16 and then the sum: within one step of the fused sum, not equal to it.
        var product = mlp.forward(x);                                                             // (1, T, hidden), rounded
        var twoOps = h + product;
        AssertWithinOneRounding(product, twoOps, fused);
        Assert.False(Identical(twoOps, fused), "the product-then-add equals the fused sum everywhere: this test cannot tell the paths apart");
    }

    [Fact]
    public void A_kept_records_output_is_the_layers_no_graph_forward_bit_for_bit()
    {
        using var built = Build(AttentionOnly);
        var layer = LastLayer(built);
        var decoder = built.Model.modules().OfType<LlamaModel>().Single();
        Assert.True(ExplicitLayerBackward.Supports(layer, ScalarType.BFloat16));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (x, _) = Inputs(Hidden);
        var (cos, sin) = decoder.Rotary.call(arange(x.size(1)).unsqueeze(0));                    // (1, T, headDim)
        (cos, sin) = (cos.to(ScalarType.BFloat16), sin.to(ScalarType.BFloat16));

        var forward = layer.forward(x, cos, sin, null);                                          // (1, T, hidden)
        var (tape, recorded) = ExplicitLayerBackward.Record(layer, x, cos, sin, null, keepWeights: false, output: true);
        using (tape) Assert.True(Identical(forward, recorded!), $"differs by {MaxDiff(forward, recorded!):E2}");

        // Under autograd (the input requires grad) the layer keeps its product-then-add: one bf16 step away at most.
        Tensor withGraph;
        using (enable_grad()) withGraph = layer.forward(x.detach().requires_grad_(true), cos, sin, null);
        Assert.True(withGraph.requires_grad);
        AssertCloseInNorm(withGraph.detach(), forward);
        Assert.False(Identical(withGraph.detach(), forward), "the autograd forward equals the fused one: the fused path was not taken");
    }

    [Fact]
    public void With_lora_on_down_or_under_autograd_the_sum_is_the_old_add()
    {
        using var scope = NewDisposeScope();
        using (var built = Build(DownToo))
        {
            var mlp = LastLayer(built).Mlp;
            Assert.IsType<LoraLinear>(mlp.Projections["down_proj"]);
            using (no_grad())
            {
                foreach (var (_, lora) in AdapterFiles.LoraModules(built.Model)) lora.B.fill_(0.01); // a non-zero update
                var (x, h) = Inputs(Hidden);
                Assert.True(Identical(h + mlp.forward(x), mlp.ForwardAdding(x, h)));
            }
        }
        using (var built = Build(AttentionOnly))
        {
            var mlp = LastLayer(built).Mlp;
            var (x, h) = Inputs(Hidden);
            var input = x.requires_grad_(true);
            var old = h + mlp.forward(input);
            var sum = mlp.ForwardAdding(input, h);
            Assert.True(sum.requires_grad);
            Assert.True(Identical(old.detach(), sum.detach()));
        }
    }

    /// <summary>A checkpointed model whose down projections are bare NF4 linears (LoRA on q and v only): a layer that
    /// keeps its record gives the loss and gradients of one recomputed bit for bit, in fp32 as in LayerRecordTests.</summary>
    [Fact]
    public void A_kept_record_with_a_bare_down_projection_changes_no_bit_of_the_loss_or_the_gradients()
    {
        (float Loss, Tensor[] Grads, long Recorded) Run(int recorded)
        {
            using var built = Build(AttentionOnly, ScalarType.Float32, checkpointing: true);
            var decoder = built.Model.modules().OfType<LlamaModel>().Single();
            decoder.UncheckpointedLayers = recorded;
            Assert.All(decoder.Layers, l => Assert.IsType<FourBitLinear>(l.Mlp.Projections["down_proj"]));
            built.Model.train();
            var (loss, grads) = FamilyLora.LossAndAdapterGradients(built.Model, FamilyReference.Of("llama3").HeldoutIds.Take(40).ToArray());
            return (loss, grads, decoder.Layers.Sum(l => l.RecordedBackwards));
        }
        var recomputed = Run(0);
        var kept = Run(1000);
        Assert.Equal((0L, 4L), (recomputed.Recorded, kept.Recorded));
        Assert.Equal(recomputed.Loss, kept.Loss);
        Assert.Equal(recomputed.Grads.Length, kept.Grads.Length);
        for (int i = 0; i < kept.Grads.Length; i++)
            Assert.True(Identical(recomputed.Grads[i], kept.Grads[i]), $"gradient {i} differs");
    }
}
