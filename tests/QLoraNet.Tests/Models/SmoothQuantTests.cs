using QLoraNet.Models;
using QLoraNet.Quant.Kernels;
using QLoraNet.Quant.SmoothQuant;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Models;

/// <summary>SmoothQuant's migration folded into the RMSNorm before the linears, and the exact int8 matmul of W8A8.</summary>
[Trait("tier", "unit")]
public class SmoothQuantTests
{
    const int Hidden = 64, Out = 24, Tokens = 40;

    [Fact]
    public void Folding_the_smoothing_scales_leaves_the_float_output_unchanged()
    {
        using var scope = NewDisposeScope();
        var x = tensor(Normal(Tokens * Hidden, 31)).reshape(Tokens, Hidden);
        x.select(1, 3).mul_(40);                                                        // an outlier channel
        var norm = new RmsNorm("input_layernorm", tensor(Normal(Hidden, 32)).abs().add_(0.5f), 1e-5);
        var wq = tensor(Normal(Out * Hidden, 33)).reshape(Out, Hidden);
        var wk = tensor(Normal(Out * Hidden, 34)).reshape(Out, Hidden);
        var h = norm.call(x);
        var before = cat([h.matmul(wq.t()), h.matmul(wk.t())], 1);

        var max = SmoothingScales.UpdateMax(null, h);
        var s = SmoothingScales.Compute(max, [wq, wk], 0.5);
        norm.DivideOutput(s);
        var after = cat([norm.call(x).matmul((wq * s).t()), norm.call(x).matmul((wk * s).t())], 1);

        // The smoothed outlier channel: its activation max shrinks by s_3 (> 1 here).
        Assert.True(s[3].item<float>() > 1);
        Assert.True(SmoothingScales.UpdateMax(null, norm.call(x))[3].item<float>() < max[3].item<float>());
        // fp32: y = Σ_j (h_j / s_j)(w_j s_j); each term changes by at most 3 roundings (2^-24 each, relative), so
        // |Δy| <= 3 · 2^-24 · Σ_j |h_j w_j| (plus the summation's own error, bounded alike): 8 · 2^-24 · Σ|h_j w_j|.
        var bound = cat([h.abs().matmul(wq.abs().t()), h.abs().matmul(wk.abs().t())], 1) * (8 * Math.Pow(2, -24) * Hidden);
        Assert.True((after - before).abs().le(bound).all().item<bool>(), $"max |Δ| {(after - before).abs().max().item<float>()}");
    }

    [Fact]
    public void Int8_matmul_is_exact_integer_arithmetic()
    {
        // Inner size 3000 crosses the 1024-element chunks; extreme codes ±127 make partial sums near 2^24.
        var rng = new Random(5);
        int m = 3, n = 4, k = 3000;
        var a = Enumerable.Range(0, m * k).Select(i => (sbyte)(i % 5 == 0 ? 127 : rng.Next(-127, 128))).ToArray();
        var b = Enumerable.Range(0, n * k).Select(i => (sbyte)(i % 5 == 0 ? 127 : rng.Next(-127, 128))).ToArray();
        using var ta = tensor(a).reshape(m, k);
        using var tb = tensor(b).reshape(n, k);
        using var c = Int8MatMul.Fp32Exact(ta, tb);
        var got = c.data<int>().ToArray();
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                long sum = 0;
                for (int t = 0; t < k; t++) sum += a[i * k + t] * b[j * k + t];
                Assert.Equal(sum, got[i * n + j]);
            }
    }

    [Fact]
    public void W8A8_linear_computes_the_dequantized_product_of_int8_activations_and_weights()
    {
        using var scope = NewDisposeScope();
        var w = tensor(Normal(Out * Hidden, 41)).reshape(Out, Hidden);
        var x = tensor(Normal(2 * 5 * Hidden, 42)).reshape(2, 5, Hidden);
        var stored = W8A8Weight.Quantize(w);
        using var linear = new W8A8Linear(stored, ScalarType.Float32);
        var y = linear.call(x);
        var (xq, xs) = W8A8Weight.RowwiseInt8(x.reshape(-1, Hidden));
        // Reference in fp64: Σ integer products (exact) · x scale · w scale; the fp32 path rounds the int32 sum and
        // two products: relative error <= 3 · 2^-24.
        var expected = (xq.to(ScalarType.Float64).matmul(stored.Codes.to(ScalarType.Float64).t()) * xs.to(ScalarType.Float64)
            * stored.Scales.to(ScalarType.Float64).unsqueeze(0)).reshape(2, 5, Out);
        var diff = (y.to(ScalarType.Float64) - expected).abs();
        Assert.True(diff.le(expected.abs() * (3 * Math.Pow(2, -24)) + 1e-30).all().item<bool>(), $"max |Δ| {diff.max().item<double>()}");
        // And W8A8 stays close to the float product (int8 on both sides: a few per mille here).
        var dense = x.matmul(w.t());
        Assert.True(((y - dense).norm() / dense.norm()).item<float>() < 0.02f);
    }
}
