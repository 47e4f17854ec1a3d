using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Models;

/// <summary>
/// The model's norms, RoPE and gated units run through the kernel selection's fused ops (src/Kernels). On the CPU
/// each op runs its torch-op reference, so the wired model must equal the unfused composition the model files had
/// before (HF's op order, written out below) bit for bit, forward and backward; and every call must be served by
/// the selection's ops, which count them (a module left unwired would not be counted).
/// </summary>
[Trait("tier", "unit")]
public class FusedWiringTests
{
    static LlamaForCausalLM LoadTiny(KernelSelection kernels) =>
        LlamaLoader.Load(Paths.TinyModel, new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32), Kernels: kernels));

    [Fact]
    public void Every_norm_rope_and_gated_unit_call_is_served_by_the_selections_fused_ops()
    {
        var kernels = KernelSelection.For(CPU);
        using var model = LoadTiny(kernels);
        int layers = model.Model.Layers.Count;
        var before = kernels.Fused.CallCounts();
        using (var scope = NewDisposeScope())
        using (no_grad())
            model.forward(tensor(new long[] { 1, 450, 3681, 29892, 278, 7037 }).unsqueeze(0));
        var after = kernels.Fused.CallCounts();
        (long Kernel, long Reference) Delta(string op) => (after[op].Kernel - before[op].Kernel, after[op].Reference - before[op].Reference);

        // Per layer: the input norm, the post-attention add fused into the pre-MLP norm; then the final norm.
        Assert.Equal((0L, 2L * layers + 1), Delta("rmsnorm"));
        Assert.Equal((0L, (long)layers), Delta("rope"));    // q and k in one call
        Assert.Equal((0L, (long)layers), Delta("glu"));
        Assert.Contains("rmsnorm on cpu: torch-ops (CPU tensors: torch-op reference)", kernels.Report());
    }

    [Fact]
    public void Model_built_with_the_fused_ops_equals_the_portable_one_bit_for_bit()
    {
        using var scope = NewDisposeScope();
        using var fused = LoadTiny(KernelSelection.For(CPU));
        using var portable = LoadTiny(KernelSelection.Portable);
        var ids = tensor(new long[] { 1, 450, 3681, 29892, 278, 7037, 310, 278 }).view(2, 4);
        using var _ = no_grad();
        AssertIdentical(fused.forward(ids), portable.forward(ids), "logits");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void Decoder_layer_equals_the_unfused_composition_bit_for_bit_forward_and_backward(int layerIndex)
    {
        using var scope = NewDisposeScope();
        using var model = LoadTiny(KernelSelection.For(CPU));
        var layer = model.Model.Layers[layerIndex];
        var g = new Generator(7);
        long b = 2, t = 9, hidden = model.Architecture.Hidden;
        var x = randn([b, t, hidden], generator: g);
        var dy = randn([b, t, hidden], generator: g);
        var positions = arange(t).unsqueeze(0).expand(b, t);
        var (cos, sin) = model.Model.Rotary.call(positions);

        var xFused = x.clone().requires_grad_(true);
        var yFused = layer.forward(xFused, cos, sin, null);
        yFused.backward([dy]);

        var xPlain = x.clone().requires_grad_(true);
        var yPlain = UnfusedLayer(layer, xPlain, cos, sin);
        yPlain.backward([dy]);

        AssertIdentical(yFused, yPlain, "forward");
        AssertIdentical(xFused.grad!, xPlain.grad!, "backward");
    }

    /// <summary>The layer as the model files computed it before the fused ops (Llama: no window, SDPA, causal).</summary>
    static Tensor UnfusedLayer(LlamaDecoderLayer layer, Tensor hidden, Tensor cos, Tensor sin)
    {
        var norms = layer.named_children().Where(c => c.module is RmsNorm).ToDictionary(c => c.name, c => (RmsNorm)c.module);
        var attn = layer.SelfAttn;
        long b = hidden.shape[0], t = hidden.shape[1], heads = attn.NumHeads, kv = attn.NumKvHeads, d = attn.HeadDim;
        var p = attn.Projections;
        var n = Norm(norms["input_layernorm"], hidden);
        var q = p.Call(LinearRole.Query, n).view(b, t, heads, d).transpose(1, 2);
        var k = p.Call(LinearRole.Key, n).view(b, t, kv, d).transpose(1, 2);
        var v = p.Call(LinearRole.Value, n).view(b, t, kv, d).transpose(1, 2);
        (q, k) = (RotaryEmbedding.Apply(q, cos, sin), RotaryEmbedding.Apply(k, cos, sin));
        Tensor Repeat(Tensor x) => x.unsqueeze(2).expand(b, kv, heads / kv, t, d).reshape(b, heads, t, d);
        var a = F.scaled_dot_product_attention(q, Repeat(k), Repeat(v), null, p: 0.0, is_casual: true);
        var attended = p.Call(LinearRole.Output, a.transpose(1, 2).reshape(b, t, heads * d));
        var h = hidden + attended;
        var m = Norm(norms["post_attention_layernorm"], h);
        var mp = layer.Mlp.Projections;
        return h + mp.Call(LinearRole.Down, F.silu(mp.Call(LinearRole.Gate, m)) * mp.Call(LinearRole.Up, m));
    }

    /// <summary>LlamaRMSNorm: w * (x32 * rsqrt(mean(x32^2) + eps)).to(dtype).</summary>
    static Tensor Norm(RmsNorm norm, Tensor x)
    {
        var x32 = x.to(ScalarType.Float32);
        var normed = x32 * rsqrt(x32.pow(2).mean([-1L], keepdim: true) + norm.Eps);
        return norm.Weight.to(x.dtype) * normed.to(x.dtype);
    }

    [Theory]
    [InlineData(NormKind.Rms, ScalarType.BFloat16)]
    [InlineData(NormKind.RmsOffsetOne, ScalarType.BFloat16)]
    [InlineData(NormKind.Rms, ScalarType.Float32)]
    public void AddAndNorm_is_the_residual_add_then_the_norm_bit_for_bit_with_gradients(NormKind kind, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        var w = (randn([64], generator: g) * 0.2 + (kind == NormKind.Rms ? 1.0 : 0.0)).to(dtype);
        using var norm = new RmsNorm("n", w.clone(), 1e-6, kind, KernelSelection.For(CPU).Fused.RmsNorm);
        var x = randn([3, 5, 64], generator: g).to(dtype);
        var r = (randn([3, 5, 64], generator: g) * 4).to(dtype);
        var (dh, dy) = (randn([3, 5, 64], generator: g).to(dtype), randn([3, 5, 64], generator: g).to(dtype));

        var (xa, ra) = (x.clone().requires_grad_(true), r.clone().requires_grad_(true));
        var (h, y) = norm.AddAndNorm(xa, ra);
        autograd.backward([h, y], [dh, dy]);

        var (xb, rb) = (x.clone().requires_grad_(true), r.clone().requires_grad_(true));
        var hb = rb + xb;
        var yb = norm.forward(hb);
        autograd.backward([hb, yb], [dh, dy]);

        AssertIdentical(h, hb, "sum");
        AssertIdentical(y, yb, "normed");
        AssertIdentical(xa.grad!, xb.grad!, "gradient of x");
        AssertIdentical(ra.grad!, rb.grad!, "gradient of the residual");
    }
}
