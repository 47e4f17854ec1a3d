using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Models.Families;

/// <summary>The arithmetic the families added, each against its formula and transformers' op order.</summary>
[Trait("tier", "unit")]
public class FamilyArithmeticTests
{
    [Fact]
    public void Offset_rms_norm_multiplies_by_one_plus_w_in_fp32_before_the_cast()
    {
        var g = new Generator(3);
        using var scope = NewDisposeScope();
        var x = randn([2, 5, 64], generator: g).to(ScalarType.BFloat16);
        var w = (randn([64], generator: g) * 0.3).to(ScalarType.BFloat16);
        using var norm = new RmsNorm("n", w.clone(), 1e-6, NormKind.RmsOffsetOne);   // the Parameter takes over the handle it is given
        var ours = norm.forward(x);

        // GemmaRMSNorm: (x32 * rsqrt(mean(x32^2) + eps) * (1 + w32)).type_as(x)
        var x32 = x.to(ScalarType.Float32);
        var normed = x32 * rsqrt(x32.pow(2).mean([-1L], keepdim: true) + 1e-6);
        var gemma = (normed * (1.0 + w.to(ScalarType.Float32))).to(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, ours.dtype);
        Assert.True(ours.eq(gemma).all().item<bool>());
        // Llama's order (cast, then multiply by the weight in bf16) rounds differently: the order is observable.
        var llamaOrder = (1.0 + w.to(ScalarType.Float32)).to(ScalarType.BFloat16) * normed.to(ScalarType.BFloat16);
        Assert.False(ours.eq(llamaOrder).all().item<bool>());

        using var zero = new RmsNorm("z", zeros(64), 1e-6, NormKind.RmsOffsetOne);   // w = 0 is the unit scale
        using var plain = new RmsNorm("p", ones(64), 1e-6, NormKind.Rms);
        var y = randn([3, 64], generator: g);
        Assert.True(zero.forward(y).allclose(plain.forward(y), rtol: 0, atol: 0));
    }

    [Fact]
    public void Gemma_embedding_scale_is_sqrt_hidden_rounded_to_the_compute_dtype()
    {
        using var bf16 = LlamaModel.EmbeddingScale(3072, ScalarType.BFloat16, CPU);
        using var fp32 = LlamaModel.EmbeddingScale(3072, ScalarType.Float32, CPU);
        Assert.Equal(55.5f, bf16.to(ScalarType.Float32).item<float>());                 // sqrt(3072) = 55.4256... in bf16
        Assert.Equal((float)Math.Sqrt(3072), fp32.item<float>());
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
    }

    [Fact]
    public void Geglu_uses_the_tanh_approximation_of_gelu()
    {
        using var scope = NewDisposeScope();
        var x = linspace(-4, 4, 81);
        var expected = 0.5 * x * (1 + tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x.pow(3))));
        var w = eye(81);
        (LayerLinear, FrozenLinear, Tensor?) P(string name, LinearRole role, Tensor weight) =>
            (new LayerLinear("mlp." + name, role, 81, 81), new DenseFrozenLinear(weight, ScalarType.Float32), null);
        using var mlp = new LlamaMlp("mlp", Activation.GeluTanh, [P("gate_proj", LinearRole.Gate, w), P("up_proj", LinearRole.Up, eye(81)), P("down_proj", LinearRole.Down, w)]);
        // gate = up = identity, down = identity: y = gelu_tanh(x) * x
        var y = mlp.forward(x.unsqueeze(0));
        Assert.True(y[0].allclose(expected * x, rtol: 1e-5, atol: 1e-6));
        Assert.False(y[0].allclose(F.gelu(x) * x, rtol: 1e-6, atol: 1e-7));               // not the exact erf GELU
    }

    [Fact]
    public void Explicit_attention_without_cap_or_scale_equals_sdpa_and_the_cap_bounds_every_score()
    {
        var g = new Generator(9);
        using var scope = NewDisposeScope();
        var q = randn([2, 3, 7, 8], generator: g) * 3;
        var k = randn([2, 3, 7, 8], generator: g) * 3;
        var v = randn([2, 3, 7, 8], generator: g);
        foreach (int? window in new int?[] { null, 3 })
        {
            var mask = AttentionMask.Causal(7, 7, CPU, window);
            var sdpa = F.scaled_dot_product_attention(q, k, v, mask);
            var ours = ExplicitAttention.Compute(q, k, v, mask, Math.Pow(8, -0.5), softCap: null);
            Assert.True(ours.allclose(sdpa, rtol: 1e-5, atol: 1e-6), $"window {window}");
        }
        // With cap c the probabilities are those of c·tanh(s/c): bounded scores flatten the softmax.
        var causal = AttentionMask.Causal(7, 7, CPU);
        var capped = ExplicitAttention.Compute(q, k, v, causal, 1.0, softCap: 0.5);
        var scores = (q.matmul(k.transpose(2, 3)) / 0.5).tanh() * 0.5;
        var manual = F.softmax(scores.masked_fill(causal.logical_not(), double.NegativeInfinity), -1).matmul(v);
        Assert.True(capped.allclose(manual, rtol: 1e-5, atol: 1e-6));
        Assert.False(capped.allclose(ExplicitAttention.Compute(q, k, v, causal, 1.0, softCap: null), rtol: 1e-2, atol: 1e-2));
    }

    [Fact]
    public void Gemma2_final_logits_are_soft_capped_at_the_configured_value()
    {
        var r = FamilyReference.Of("gemma2");
        using var model = r.LoadFp32();
        using var _ = no_grad();
        using var ids = tensor(r.HeldoutIds.Take(64).ToArray(), [1, 64]);
        using var logits = model.forward(ids);
        Assert.True(logits.abs().max().item<float>() <= 5.0f);   // uncapped they reach ~43 (reference.json softcap_check)
    }
}
