using QLoraNet.Formats;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>BitNet b1.58: absmean ternary weights in Hugging Face's packing, 8-bit activations, the add/subtract product.</summary>
[Trait("tier", "unit")]
public class TernaryTests
{
    static string Fixture => Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", "bitnet");

    [Theory]
    [InlineData(TernaryMatMulPath.Cuda, 1, 256, TernaryMatMulPath.Cuda)]
    [InlineData(TernaryMatMulPath.Cuda, 256, 256, TernaryMatMulPath.Cuda)]
    [InlineData(TernaryMatMulPath.Cuda, 257, 256, TernaryMatMulPath.TorchOps)]
    [InlineData(TernaryMatMulPath.Cuda, 2048, 256, TernaryMatMulPath.TorchOps)]
    [InlineData(TernaryMatMulPath.CpuSimd, 2048, 256, TernaryMatMulPath.CpuSimd)]
    [InlineData(TernaryMatMulPath.TorchOps, 1, 256, TernaryMatMulPath.TorchOps)]
    public void The_cuda_kernel_takes_calls_up_to_the_token_threshold_and_the_matmul_above(TernaryMatMulPath selected, long tokens, int max, TernaryMatMulPath expected) =>
        Assert.Equal(expected, TernaryMatMul.PathForTokens(selected, tokens, max));

    [Fact]
    public void The_cuda_report_line_names_both_paths_and_the_threshold()
    {
        var line = KernelSelection.TernaryLine("cuda", TernaryMatMulPath.Cuda, "self-check passed");
        Assert.Contains($"add/subtract kernel up to {TernaryMatMul.CudaKernelMaxTokens} tokens", line);
        Assert.Contains("unpack + matmul above", line);
        Assert.Equal("ternary matmul on cpu: cpu-simd (x)", KernelSelection.TernaryLine("cpu", TernaryMatMulPath.CpuSimd, "x"));
    }

    [Fact]
    public void Packing_puts_four_row_blocks_into_the_bit_pairs_of_a_byte()
    {
        // out = 8, in = 2: rows 0-1 in bits 0-1, rows 2-3 in bits 2-3, rows 4-5 in bits 4-5, rows 6-7 in bits 6-7; value + 1.
        using var q = tensor(new float[,] { { 1, -1 }, { 0, 1 }, { -1, -1 }, { 1, 0 }, { 0, 0 }, { 1, 1 }, { -1, 1 }, { 0, -1 } });
        using var packed = TernaryWeight.Pack(q);
        // byte [0,0]: rows 0,2,4,6 col 0 = 2,0,1,0 -> 2 | 0<<2 | 1<<4 | 0<<6 = 0x12
        Assert.Equal(new byte[] { 0x12, 0x90, 0x69, 0x26 }, Bytes(packed));
        using var back = TernaryWeight.Unpack(packed);
        Assert.True(Bits.Same(q, back));
    }

    [Fact]
    public void The_fixture_packing_unpacks_to_its_recorded_zero_fractions_and_packs_back_byte_for_byte()
    {
        using var st = SafeTensorsFile.Open(Path.Combine(Fixture, "model.safetensors"));
        using var reference = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixture, "reference.json")));
        var packing = reference.RootElement.GetProperty("bitnet_packing");
        foreach (var module in new[] { "model.layers.0.self_attn.q_proj", "model.layers.2.mlp.down_proj" })
        {
            using var packed = st.Read(module + ".weight");
            using var q = TernaryWeight.Unpack(packed);
            double zeros = q.eq(0).to(ScalarType.Float64).mean().item<double>();
            Assert.Equal(packing.GetProperty(module).GetProperty("zeros_fraction").GetDouble(), zeros, 12);
            using var again = TernaryWeight.Pack(q);
            Assert.True(Bits.Same(packed, again), module);
            using var scale = st.Read(module + ".weight_scale");
            Assert.Equal(packing.GetProperty(module).GetProperty("scale").GetDouble(), scale.to(ScalarType.Float64).item<double>(), 12);
        }
    }

    [Fact]
    public void Quantize_uses_the_absmean_rounded_to_bf16()
    {
        // mean |W| = (0.5 + 0.3 + 0.1 + 1.1) / 4 = 0.5 (bf16-exact); W / 0.5 = 1, -0.6, 0.2, 2.2 -> 1, -1, 0, 1.
        using var w = tensor(new float[,] { { 0.5f }, { -0.3f }, { 0.1f }, { 1.1f } });
        var t = TernaryWeight.Quantize(w);
        Assert.Equal(ScalarType.BFloat16, t.Scale.dtype);
        AssertBitsEqual([0.5f], Floats(t.Scale), "scale");
        AssertBitsEqual([1f, -1f, 0f, 1f], Floats(t.Unpack()), "codes");
        AssertBitsEqual([0.5f, -0.5f, 0f, 0.5f], Floats(t.Dequantize(ScalarType.Float32)), "dequantized");
        using var zero = zeros(4, 2);
        using var floor = tensor(1e-5f).to(ScalarType.BFloat16);
        AssertBitsEqual([Floats(floor)[0]], Floats(TernaryWeight.Quantize(zero).Scale), "an all-zero matrix gets the 1e-5 floor");
    }

    [Fact]
    public void Activations_get_transformers_per_token_8bit_codes()
    {
        // Token max 2: s = reciprocal(2) * 127 = 63.5; codes round(x * 63.5): 2 -> 127, -1 -> -63.5 -> -64, 0.01 -> 0.635 -> 1.
        using var x = tensor(new float[,] { { 2f, -1f, 0.01f }, { 0f, 0f, 0f } });
        var (codes, scale) = TernaryActivations.Quantize(x);
        AssertBitsEqual([127f, -64f, 1f, 0f, 0f, 0f], Floats(codes), "codes");
        AssertBitsEqual([63.5f, 1f / 1e-5f * 127f], Floats(scale), "scales");
    }

    [Theory]
    [InlineData(3, 8, 1)]
    [InlineData(5, 12, 31)]
    [InlineData(2, 16, 33)]
    [InlineData(4, 4, 4096 + 37)]   // more than one 16-bit flush of the accumulators
    public void The_add_subtract_kernel_equals_the_dequantize_then_matmul_reference(int n, int m, int k)
    {
        using var g = new Generator((ulong)k);
        using var q = randint(-1, 2, [m, k], generator: g).to(ScalarType.Float32);
        using var packed = TernaryWeight.Pack(q);
        using var codes = randint(-128, 128, [n, k], generator: g).to(ScalarType.Float32);
        codes[0, 0] = tensor(-128f);                              // the one code whose negation does not fit a byte
        var w = new TernaryWeight(packed, tensor(new[] { 0.25f }).to(ScalarType.BFloat16), [m, k], ScalarType.Float32);
        using var reference = TernaryMatMul.Sums(codes, w, TernaryMatMulPath.TorchOps);
        using var simd = TernaryMatMul.Sums(codes, w, TernaryMatMulPath.CpuSimd);
        AssertBitsEqual(Floats(reference), Floats(simd), "sums");
    }

    [Fact]
    public void The_linear_is_transformers_autobitlinear_within_fp32_summation_rounding()
    {
        // transformers: linear(n / s, W_t) * scale in fp32; here (n @ W_t^T) / s * scale, the sum exact. The two differ by
        // the rounding of transformers' own sum: at most gamma_k * sum |n_i / s| (+ 3 roundings of the result).
        const int n = 4, k = 96, m = 16;
        using var g = new Generator(21);
        using var wt = randn([m, k], generator: g);
        var w = TernaryWeight.Quantize(wt);
        using var x = randn([n, k], generator: g);
        using var simd = new TernaryLinear(w, ScalarType.Float32, KernelSelection.Portable);
        using var reference = new TernaryLinear(w, ScalarType.Float32, KernelSelection.Reference(CPU));
        Assert.Equal(TernaryMatMulPath.CpuSimd, simd.MatMulPath);
        Assert.Equal(TernaryMatMulPath.TorchOps, reference.MatMulPath);
        using var y = simd.forward(x);
        using var y2 = reference.forward(x);
        Assert.True(Bits.Same(y, y2));

        using var xq = TernaryActivations.FakeQuantize(x);
        using var hf = nn.functional.linear(xq, w.Unpack()) * w.Scale.to(ScalarType.Float32);
        double u = 1.0 / (1 << 24), gamma = k * u / (1 - k * u);
        using var bound = nn.functional.linear(xq.abs(), w.Unpack().abs()) * w.Scale.to(ScalarType.Float32) * (gamma + 4 * u) + 1e-30;
        using var excess = (y - hf).abs() - bound;
        Assert.True(excess.max().item<float>() <= 0, $"exceeds by {excess.max().item<float>()}");
    }

    [Fact]
    public void Gradient_passes_straight_through_the_activation_quantizer_to_the_dequantized_weight()
    {
        using var g = new Generator(22);
        using var wt = randn([8, 24], generator: g);
        var w = TernaryWeight.Quantize(wt);
        using var linear = new TernaryLinear(w, ScalarType.Float32);
        using var x = randn([3, 24], generator: g).requires_grad_(true);
        using var gy = randn([3, 8], generator: g);
        linear.forward(x).backward([gy]);
        using var x2 = x.detach().clone().requires_grad_(true);
        nn.functional.linear(x2, w.Dequantize(ScalarType.Float32)).backward([gy]);
        Assert.True(Bits.Same(x2.grad!, x.grad!));
    }

    [Fact]
    public void A_packed_code_3_is_refused_naming_the_key_and_place()
    {
        using var packed = tensor(new byte[] { 0x12, 0x60, 0x99, 0xDA }).reshape(2, 2);   // 0xDA: bits 6-7 = 3
        var e = Assert.Throws<InvalidDataException>(() => TernaryWeight.RequireTernaryCodes(packed, "m.q_proj.weight"));
        Assert.Contains("m.q_proj.weight", e.Message);
        Assert.Contains("code 3", e.Message);
        Assert.Contains("[1, 1]", e.Message);
    }

    [Fact]
    public void Out_features_not_a_multiple_of_4_are_refused()
    {
        using var w = ones(6, 4);
        var e = Assert.Throws<ArgumentException>(() => TernaryWeight.Quantize(w, "x.weight"));
        Assert.Contains("out_features 6 is not a multiple of 4", e.Message);
    }
}
