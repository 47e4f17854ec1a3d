using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>LLM.int8(): bitsandbytes' int8_vectorwise_quant of the weight, the mixed int8/16-bit product, its gradient.</summary>
[Trait("tier", "unit")]
public class LlmInt8Tests
{
    const float U = 1f / (1 << 24);   // fp32 unit roundoff

    [Fact]
    public void Weight_rows_are_quantized_like_bitsandbytes()
    {
        // Row 0: SCB 4, 127/4 = reciprocal(4) * 127 = 31.75 exactly; 4 * 31.75 = 127, -2 * 31.75 = -63.5 -> -64 (half to
        // even), 1 -> 31.75 -> 32, 0.5 -> 15.875 -> 16. Row 1 is zero: SCB 0, codes 0 (no NaN).
        using var w = tensor(new float[,] { { 4f, -2f, 1f, 0.5f }, { 0f, 0f, 0f, 0f } });
        var q = LlmInt8Weight.Quantize(w);
        Assert.Equal(new sbyte[] { 127, -64, 32, 16, 0, 0, 0, 0 }, q.Codes.data<sbyte>().ToArray());
        AssertBitsEqual([4f, 0f], Floats(q.Scb), "SCB");
        AssertBitsEqual([127 * 4f * LlmInt8Weight.InverseOf127, -64 * 4f * LlmInt8Weight.InverseOf127, 32 * 4f * LlmInt8Weight.InverseOf127,
            16 * 4f * LlmInt8Weight.InverseOf127, 0, 0, 0, 0], Floats(q.Dequantize(ScalarType.Float32)), "dequantized");
    }

    [Fact]
    public void The_weight_is_cast_to_fp16_first_and_beyond_its_range_is_refused()
    {
        // 1.0001 is not an fp16 value: bitsandbytes quantizes fp16(1.0001) = 1.0.
        using var w = tensor(new float[,] { { 1.0001f, 0.5f } });
        AssertBitsEqual([1f], Floats(LlmInt8Weight.Quantize(w).Scb), "SCB");
        using var big = tensor(new float[,] { { 1e6f, 1f } });
        var e = Assert.Throws<ArgumentException>(() => LlmInt8Weight.Quantize(big, name: "x.weight"));
        Assert.Contains("fp16", e.Message);
        Assert.Contains("x.weight", e.Message);
    }

    /// <summary>C = A @ B^T with int32 accumulation, the definition every path must meet.</summary>
    static int[] LoopProduct(sbyte[] a, sbyte[] b, int n, int m, int k)
    {
        var c = new int[n * m];
        for (int i = 0; i < n; i++)
            for (int o = 0; o < m; o++)
            {
                int s = 0;
                for (int j = 0; j < k; j++) s += a[i * k + j] * b[o * k + j];
                c[i * m + o] = s;
            }
        return c;
    }

    [Theory]
    [InlineData(3, 16, 40)]
    [InlineData(20, 24, 2100)]   // more than two exact chunks of 1024
    public void Int8_products_equal_an_int32_loop_on_every_path(int n, int m, int k)
    {
        using var g = new Generator(5);
        using var a = randint(-127, 128, [n, k], generator: g).to(ScalarType.Int8);
        using var b = randint(-127, 128, [m, k], generator: g).to(ScalarType.Int8);
        // All codes at the extremes: the largest sums a chunk can reach.
        using var extreme = full([n, k], (sbyte)-127, ScalarType.Int8);
        foreach (var (x, what) in new[] { (a, "random"), (extreme, "extreme") })
        {
            var expected = LoopProduct(x.data<sbyte>().ToArray(), b.data<sbyte>().ToArray(), n, m, k);
            using var exact = Int8MatMul.Fp32Exact(x, b);
            Assert.Equal(expected, exact.data<int>().ToArray());
            using var intMm = KernelSelection.WithIntMm(CPU).Int8MatMulFor(CPU).Multiply(x, b);
            Assert.Equal(ScalarType.Int32, intMm.dtype);
            Assert.True(expected.SequenceEqual(intMm.data<int>().ToArray()), what);
        }
    }

    /// <summary>
    /// bitsandbytes' forward as plain loops: outlier columns, zeroed outliers, per-row absmax, codes, int32 sums, the
    /// fp32 dequantization; the 16-bit part summed in fp64. Returns the int8 part (fp32, exact to the formula) and the
    /// 16-bit part (fp64) separately, plus the bound of fp32 rounding on the latter.
    /// </summary>
    static (float[] Int8Part, double[] OutlierPart, double[] Bound, int Columns) Reference(float[] x, int n, int k, LlmInt8Weight w)
    {
        int m = (int)w.Shape[0];
        var codes = w.Codes.data<sbyte>().ToArray();
        var scb = w.Scb.data<float>().ToArray();
        var wdq = Floats(w.Dequantize(ScalarType.Float32));
        var isOutlierColumn = new bool[k];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++)
                if (MathF.Abs(x[i * k + j]) >= w.Threshold) isOutlierColumn[j] = true;
        var int8 = new float[n * m];
        var outlier = new double[n * m];
        var bound = new double[n * m];
        for (int i = 0; i < n; i++)
        {
            float sca = 0f;
            for (int j = 0; j < k; j++)
            {
                float v = x[i * k + j];
                if (MathF.Abs(v) < w.Threshold) sca = MathF.Max(sca, MathF.Abs(v));
            }
            float inverse = sca == 0 ? 0 : 1f / sca * 127f;
            var ca = new int[k];
            for (int j = 0; j < k; j++)
                ca[j] = isOutlierColumn[j] || MathF.Abs(x[i * k + j]) >= w.Threshold ? 0 : (int)MathF.Round(x[i * k + j] * inverse, MidpointRounding.ToEven);
            for (int o = 0; o < m; o++)
            {
                int acc = 0;
                double sum = 0, magnitude = 0;
                for (int j = 0; j < k; j++)
                {
                    acc += ca[j] * codes[o * k + j];
                    if (isOutlierColumn[j])
                    {
                        sum += (double)x[i * k + j] * wdq[o * k + j];
                        magnitude += Math.Abs((double)x[i * k + j] * wdq[o * k + j]);
                    }
                }
                int8[i * m + o] = acc * (sca * scb[o]) * LlmInt8MatMul.InverseOf127Squared;
                outlier[i * m + o] = sum;
                int c = isOutlierColumn.Count(b => b);
                // addmm in fp32 over c products added to the int8 part: gamma_(c+1) (|int8| + sum |x w|), plus rounding of the reference.
                double gamma = (c + 1) * U / (1 - (c + 1) * U);
                bound[i * m + o] = gamma * (Math.Abs(int8[i * m + o]) + magnitude) + U * (Math.Abs(int8[i * m + o]) + magnitude);
            }
        }
        return (int8, outlier, bound, isOutlierColumn.Count(b => b));
    }

    [Fact]
    public void Forward_equals_the_bitsandbytes_formula_int8_part_exactly_and_the_16bit_part_within_fp32_rounding()
    {
        const int n = 6, k = 48, m = 10;
        using var g = new Generator(7);
        using var wt = randn([m, k], generator: g) * 0.2;
        var w = LlmInt8Weight.Quantize(wt, threshold: 3f);
        var xs = Normal(n * k, seed: 3, sigma: 0.4f);   // |x| >= 3 only where planted (7.5 sigma)
        xs[1 * k + 5] = 7.5f;      // outlier column 5 (one row only)
        xs[4 * k + 9] = -3f;       // outlier column 9: exactly the threshold counts (>=)
        xs[2 * k + 9] = 2.9f;
        using var x = tensor(xs).reshape(n, k);
        var (int8, outlierPart, bound, columns) = Reference(xs, n, k, w);
        Assert.Equal(2, columns);
        foreach (var path in new[] { Int8MatMul.TorchOps, KernelSelection.WithIntMm(CPU).Int8MatMulFor(CPU) })
        {
            using var y = LlmInt8MatMul.Forward(x, w, ScalarType.Float32, path, out long counted);
            Assert.Equal(2, counted);
            var got = Floats(y);
            for (int i = 0; i < got.Length; i++)
            {
                double expected = int8[i] + outlierPart[i];
                Assert.True(Math.Abs(got[i] - expected) <= bound[i], $"[{i}] {got[i]} vs {expected} (bound {bound[i]:E2})");
            }
        }

        // With no outliers the 16-bit part is empty and the result is the formula bit for bit.
        var none = LlmInt8Weight.Quantize(wt, threshold: 100f);
        var (exact, _, _, zero) = Reference(xs, n, k, none);
        Assert.Equal(0, zero);
        using var y0 = LlmInt8MatMul.Forward(x, none, ScalarType.Float32, Int8MatMul.TorchOps, out _);
        AssertBitsEqual(exact, Floats(y0), "no-outlier forward");
    }

    [Fact]
    public void A_row_of_only_outliers_has_no_int8_part_and_no_nan()
    {
        using var wt = tensor(new float[,] { { 1f, 2f }, { -1f, 0.5f } });
        var w = LlmInt8Weight.Quantize(wt, threshold: 1f);
        using var x = tensor(new float[,] { { 5f, -6f }, { 0.25f, 0.5f } });   // both columns are outlier columns
        using var y = LlmInt8MatMul.Forward(x, w, ScalarType.Float32, Int8MatMul.TorchOps, out long columns);
        Assert.Equal(2, columns);
        using var dense = nn.functional.linear(x, w.Dequantize(ScalarType.Float32));
        Assert.True(Bits.Same(dense, y) || (dense - y).abs().max().item<float>() < 1e-5f);
        Assert.True(y.isfinite().all().item<bool>());
    }

    [Fact]
    public void Without_outliers_the_error_against_the_dequantized_weight_is_the_activation_rounding()
    {
        // x̂ = CA * SCA / 127 differs from x by at most SCA / 254 per element, so |y - x @ Wdq^T| <= SCA/254 * sum |Wdq[o]|
        // (plus fp32 rounding of the two products, bounded by k u sum |x w| each).
        const int n = 5, k = 64, m = 12;
        using var g = new Generator(9);
        using var wt = randn([m, k], generator: g);
        var w = LlmInt8Weight.Quantize(wt, threshold: 1000f);
        using var x = randn([n, k], generator: g);
        using var y = LlmInt8MatMul.Forward(x, w, ScalarType.Float32, Int8MatMul.TorchOps, out _);
        using var wdq = w.Dequantize(ScalarType.Float32);
        using var dense = nn.functional.linear(x, wdq);
        using var sca = x.abs().amax([1]);
        using var rowSums = wdq.abs().sum([1]);
        using var magnitude = nn.functional.linear(x.abs(), wdq.abs());
        // (1 + 1024 u): 127 / SCA is itself rounded, so the step is SCA / 127 within 2u relative.
        using var bound = sca.unsqueeze(1) * rowSums.unsqueeze(0) / 254 * (1 + 1024 * U) + magnitude * (2 * k * U);
        using var excess = (y - dense).abs() - bound;
        Assert.True(excess.max().item<float>() <= 0, $"exceeds the bound by {excess.max().item<float>()}");
    }

    [Fact]
    public void Gradient_to_the_input_is_that_of_a_dense_linear_over_the_dequantized_weight()
    {
        using var g = new Generator(11);
        using var wt = randn([16, 32], generator: g);
        var stored = LlmInt8Weight.Quantize(wt, threshold: 1.5f);
        using var linear = new LlmInt8Linear(stored, ScalarType.Float32);
        using var x = randn([4, 32], generator: g).requires_grad_(true);
        using var gy = randn([4, 16], generator: g);
        linear.forward(x).backward([gy]);
        using var x2 = x.detach().clone().requires_grad_(true);
        nn.functional.linear(x2, stored.Dequantize(ScalarType.Float32)).backward([gy]);
        Assert.True(Bits.Same(x2.grad!, x.grad!));
        Assert.Empty(linear.parameters());
        Assert.True(linear.Outliers.Forwards == 1 && linear.Outliers.OutlierColumns > 0, "the outlier columns were counted");
    }

    [Fact]
    public void Outlier_statistics_average_over_forwards()
    {
        var s = new OutlierStatistics();
        s.Add(2, 100);
        s.Add(0, 100);
        Assert.Equal(0.01, s.Fraction, 12);
        Assert.Equal(2, s.Forwards);
    }
}
