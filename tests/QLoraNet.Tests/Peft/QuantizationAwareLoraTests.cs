using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// QAT-LoRA's memory-flat function (<see cref="QuantizationAwareLoraMatMul"/>) and the aware base linear, per target
/// format: forward equals the format's frozen linear holding the merged weight; the straight-through gradients equal
/// autograd over the dense fake(W + s·B·A) formed explicitly (the slow reference). Bounds: fp32 sums of k terms
/// differ by at most gamma_k = k u / (1 - k u), u = 2^-24, times the sum of absolute products (Higham 2002, 3.1).
/// </summary>
[Trait("tier", "unit")]
public class QuantizationAwareLoraTests
{
    const int N = 5, In = 64, Out = 32, R = 4;
    const double U = 1.0 / (1 << 24);

    static double Gamma(long k) => k * U / (1 - k * U);

    /// <summary>An adapted aware linear with B made nonzero (so the update reaches the rounding), and x, dy.</summary>
    static (LoraLinear Lora, Tensor W0, Tensor X, Tensor Gy) Setup(string spelling, int seed)
    {
        using var g = new Generator((ulong)seed);
        var w0 = randn([Out, In], generator: g) * 0.05;
        var fake = BaseFormat.Parse(spelling).FakeQuantization!;
        var aware = new QuantizationAwareLinear(new DenseFrozenLinear(w0.clone(), ScalarType.Float32), fake, "model.layers.0.self_attn.q_proj.weight");
        var lora = new LoraLinear(aware, r: R, alpha: 8, dropout: 0, useRsLora: false, g);
        using (no_grad()) lora.B.normal_(0, 0.05, generator: g);
        return (lora, w0, randn([N, In], generator: g), randn([N, Out], generator: g));
    }

    [Theory]
    [InlineData("nf4")]
    [InlineData("int4-g32")]
    [InlineData("q4_0")]
    [InlineData("ternary")]
    public void Forward_is_the_formats_frozen_linear_over_the_merged_weight(string spelling)
    {
        var (lora, w0, x, _) = Setup(spelling, 71);
        using (lora) using (w0) using (x)
        using (no_grad())
        {
            var format = BaseFormat.Parse(spelling);
            using var merged = LoraMath.MergedWeight(w0, lora.A, lora.B, lora.Scaling);
            using var frozen = format.Create(merged, ScalarType.Float32, KernelSelection.Portable);
            using var expected = frozen.forward(x);
            using var actual = lora.forward(x);
            if (spelling != "ternary")
                AssertTensorsIdentical(expected, actual, $"{spelling} forward");             // same operands, same matmul
            else
            {
                // The ternary linear sums integer codes n q exactly, this sums (n / s)(q scale) in fp32.
                var fake = format.FakeQuantization!;
                using var xq = fake.Input(x);
                using var wq = fake.Weight(merged);
                using var bound = nn.functional.linear(xq.abs(), wq.abs()) * Gamma(In + 4);
                using var excess = (expected - actual).abs() - bound;
                Assert.True(excess.max().item<float>() <= 0, $"exceeds by {excess.max().item<float>()}");
            }
        }
    }

    [Theory]
    [InlineData("nf4")]
    [InlineData("int4-g32")]
    [InlineData("q4_0")]
    [InlineData("ternary")]
    public void Straight_through_gradients_equal_autograd_over_the_dense_fake_weight(string spelling)
    {
        var (lora, w0, x0, gy) = Setup(spelling, 72);
        using var _l = lora; using var _w = w0; using var _g = gy;
        var fake = BaseFormat.Parse(spelling).FakeQuantization!;
        double s = lora.Scaling;

        using var x = x0.requires_grad_(true);
        lora.forward(x).backward([gy]);

        // The slow reference: W' = W0 + s·B·A with autograd, rounded under no_grad, STE as w + (q - w).detach().
        using var a = lora.A.detach().clone().requires_grad_(true);
        using var b = lora.B.detach().clone().requires_grad_(true);
        using var xr = x.detach().clone().requires_grad_(true);
        using var merged = w0 + b.matmul(a) * s;                                           // (out, in)
        Tensor q, xq;
        using (no_grad()) { q = fake.Weight(merged.detach()); xq = fake.Input(xr.detach()); }
        using var _q = q; using var _xq = xq;
        using var ws = merged + (q - merged).detach();
        using var xs = fake.QuantizesInput ? xr + (xq - xr).detach() : xr.alias();
        nn.functional.linear(xs, ws).backward([gy]);

        // dx = gy Wq, fp32 sums of Out terms on each side; the reference multiplies by ws = W' + (q - W'), within
        // u(2|q| + |W'|) of q.
        using var gAbs = gy.abs();
        using var dxBound = gAbs.matmul(q.abs() * (2 * Gamma(Out + 2) + 2 * U) + merged.detach().abs() * U);
        AssertWithin(xr.grad!, x.grad!, dxBound, "dx");

        // dB = s Gᵀ(X Aᵀ) vs s (Gᵀ X) Aᵀ, dA = s (G B)ᵀ X vs s Bᵀ(Gᵀ X): the same products summed in two orders; the
        // reference's X~ = x + (x~ - x) is within u(2|x~| + |x|) of x~ (exactly x for weight-only formats).
        using var xAbs = fake.QuantizesInput ? xq.abs() + xr.detach().abs() : xr.detach().abs();
        double slack = fake.QuantizesInput ? 2 * U : 0;
        using var gx = gAbs.t().matmul(xAbs);                                              // (out, in) |G|ᵀ |X~|
        using var dbBound = gx.matmul(lora.A.detach().abs().t()) * (s * (2 * Gamma(N + In + 2) + slack));
        using var daBound = lora.B.detach().abs().t().matmul(gx) * (s * (2 * Gamma(N + Out + 2) + slack));
        AssertWithin(b.grad!, lora.B.grad!, dbBound, "dB");
        AssertWithin(a.grad!, lora.A.grad!, daBound, "dA");
    }

    static void AssertWithin(Tensor expected, Tensor actual, Tensor bound, string what)
    {
        using var excess = (expected - actual).abs() - bound;
        float worst = excess.max().item<float>();
        Assert.True(worst <= 0, $"{what}: exceeds its bound by {worst}");
        Assert.True(actual.abs().sum().item<float>() > 0, $"{what} is zero");
    }

    [Theory]
    [InlineData("nf4")]
    [InlineData("q4_0")]
    [InlineData("ternary")]
    public void An_unadapted_aware_linear_is_the_formats_frozen_linear_with_straight_through_input_gradients(string spelling)
    {
        var format = BaseFormat.Parse(spelling);
        using var w = tensor(Normal(Out * In, 73, 0.05f)).reshape(Out, In);
        using var aware = new QuantizationAwareLinear(new DenseFrozenLinear(w.clone(), ScalarType.Float32), format.FakeQuantization!);
        using var x = tensor(Normal(N * In, 74)).reshape(N, In).requires_grad_(true);
        using var y = aware.call(x);
        using var q = format.RoundTrip(w);
        using var xq = format.FakeQuantization!.Input(x.detach());
        using (var expected = nn.functional.linear(xq, q)) AssertTensorsIdentical(expected, y.detach(), "forward");
        y.sum().backward();
        using var dx = ones(N, Out).matmul(q);
        AssertTensorsIdentical(dx, x.grad!, "dx = dy Wq");
        Assert.Equal($"fp32, aware {spelling}", aware.FormatName);

        // B = 0: LoRA over it starts as the aware base, bit for bit.
        using var lora = new LoraLinear(aware, r: R, alpha: 8, dropout: 0, useRsLora: false);
        using (no_grad()) using (var z = lora.forward(x.detach())) AssertTensorsIdentical(y.detach(), z, "B = 0");
    }

    [Fact]
    public void Calibrated_formats_and_none_have_no_fake_quantization_and_weight_only_ones_do()
    {
        foreach (var s in new[] { "none", "gptq4-g128", "awq4", "smoothquant" })
            Assert.Null(BaseFormat.Parse(s).FakeQuantization);
        foreach (var s in new[] { "bf16", "nf4", "nf4-dq", "fp4-b128", "int8", "int4-g32", "int3-asym", "hqq4", "llm-int8", "ternary", "q4_0", "q8_0" })
            Assert.Equal(s, BaseFormat.Parse(s).FakeQuantization!.Name);
        Assert.False(BaseFormat.Parse("nf4").FakeQuantization!.QuantizesInput);
        Assert.True(BaseFormat.Parse("ternary").FakeQuantization!.QuantizesInput);
        Assert.Contains("needs calibration", Assert.Throws<ArgumentException>(() => new RoundTripFakeQuantization(BaseFormat.Parse("gptq4-g128"))).Message);
    }
}

/// <summary>
/// QAT-LoRA under gradient checkpointing (the training default): each decoder layer's forward is run again in backward,
/// fake quantization and the memory-flat function included. The recomputation is the same arithmetic on the same
/// inputs, so the loss is the same bits and the adapters' gradients agree to the accumulation-order bound the plain
/// LoRA checkpointing test uses.
/// </summary>
[Trait("tier", "unit")]
public class QuantizationAwareCheckpointingTests
{
    [Theory]
    [InlineData("nf4")]
    [InlineData("q4_0-f16")]
    [InlineData("ternary")]
    public void Checkpointed_aware_layers_give_the_same_loss_and_adapter_gradients(string aware)
    {
        int layers = 0;
        (float Loss, Tensor[] Grads) Run(bool checkpointing)
        {
            using var built = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(ScalarType.Float32),
                GradientCheckpointing: checkpointing, NewAdapter: FamilyLora.AllLinear, AdapterSeed: 5, Aware: BaseFormat.Parse(aware)));
            var model = built.Model;
            layers = built.Architecture.NumLayers;
            Assert.All(AdapterFiles.LoraModules(model), l => Assert.IsType<QuantizationAwareLinear>(l.lora.BaseLayer));
            return FamilyLora.LossAndAdapterGradients(model, [1, 450, 29871, 29896, 29929, 1670, 4482, 322, 278, 3186, 338, 263, 2107, 29889]);
        }
        var plain = Run(false);
        var ckpt = Run(true);
        Assert.Equal(plain.Loss, ckpt.Loss);
        Assert.Equal(2 * 7 * layers, plain.Grads.Length);
        for (int i = 0; i < plain.Grads.Length; i++)
        {
            Assert.True(plain.Grads[i].abs().sum().item<float>() > 0, $"{aware}: no gradient reached adapter factor {i}");
            Assert.True(plain.Grads[i].allclose(ckpt.Grads[i], rtol: 1e-5, atol: 1e-7),
                $"{aware}: gradient {i} differs by {(plain.Grads[i] - ckpt.Grads[i]).abs().max().item<float>():E2}");
        }
    }
}
