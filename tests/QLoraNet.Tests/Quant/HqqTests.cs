using QLoraNet.Quant;
using QLoraNet.Tests.Peft;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>HQQ: hqq's bit packing, the half-quadratic zero-point solver, the stored value and its frozen linear.</summary>
[Trait("tier", "unit")]
public class HqqTests
{
    /// <summary>hqq's pack functions transcribed per element: block j of the rows goes to bit offset (8 - bits (j+1)),
    /// or for 3 bits (27 - 3j) of an int32, rows padded to a multiple of 10.</summary>
    static long[] LoopPack(int[] codes, int rows, int group, int bits)
    {
        int blocks = bits == 3 ? 10 : 8 / bits;
        int step = bits == 3 ? (rows + 9) / 10 : rows / blocks;
        var packed = new long[step * group];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < group; c++)
            {
                int j = r / step, shift = bits == 3 ? 27 - 3 * j : 8 - bits * (j + 1);
                packed[(r % step) * group + c] |= (long)codes[r * group + c] << shift;
            }
        return packed;
    }

    [Theory]
    [InlineData(8, 6)]
    [InlineData(4, 6)]
    [InlineData(2, 8)]
    [InlineData(3, 13)]   // padded to 20 rows, two int32 rows
    public void Packing_is_hqqs_and_unpacking_inverts_it(int bits, int rows)
    {
        const int group = 8;
        var rng = new Random(bits);
        var codes = Enumerable.Range(0, rows * group).Select(_ => rng.Next(1 << bits)).ToArray();
        using var q = tensor(codes).reshape(rows, group);
        using var packed = HqqBitPack.Pack(q, bits);
        Assert.Equal(HqqBitPack.StorageDType(bits), packed.dtype);
        Assert.Equal(new[] { HqqBitPack.PackedRows(bits, rows), (long)group }, packed.shape);
        var expected = LoopPack(codes, rows, group, bits);
        var actual = packed.to(ScalarType.Int64).data<long>().ToArray();
        Assert.Equal(expected, actual);
        using var back = HqqBitPack.Unpack(packed, bits, rows);
        Assert.Equal(codes.Select(c => (float)c).ToArray(), Floats(back));
    }

    [Fact]
    public void Scale_and_starting_zero_follow_hqqs_min_max_rule()
    {
        // Groups [0, 1, 2, 3, 0, 1, 2, 3] at 2 bits: s = reciprocal(3 - 0) * 3 = 1, z = -0 * s = 0: the codes are the
        // values, the error is 0, and the solver stops at its second iteration (0 is not below the best, 0).
        using var w = tensor(Enumerable.Range(0, 32).Select(i => (float)(i % 4)).ToArray()).reshape(4, 8);
        var q = HqqWeight.Quantize(w, new HqqFormat(2, 8), null, out int iterations);
        Assert.Equal(2, iterations);
        Assert.Equal(Floats(w), Floats(q.Codes()));
        Assert.All(Floats(q.Scale), v => Assert.Equal(1f, v));
        Assert.All(Floats(q.Zero), v => Assert.Equal(0f, v));
        AssertBitsEqual(Floats(w), Floats(q.Dequantize(ScalarType.Float32)), "exact grid");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void The_solver_lowers_the_error_of_round_to_nearest(int bits)
    {
        // Heavy-tailed weights (the case hqq's lp < 1 error is for): mean |W - dequant| after the solver, in fp32 before the
        // fp16 cast of the meta-data, is no worse than min-max rounding (the solver stops when it stops improving).
        using var g = new Generator((ulong)bits);
        using var normal = randn([64, 128], generator: g);
        using var w = normal * normal.abs().sqrt();
        var spec = new HqqFormat(bits);
        var q = HqqWeight.Quantize(w, spec);
        using var rtn = RoundToNearest(w, spec);
        double solved = (w - q.Dequantize(ScalarType.Float32)).abs().mean().item<float>();
        double plain = (w - rtn).abs().mean().item<float>();
        Assert.True(solved < plain, $"hqq{bits}: {solved} vs round-to-nearest {plain}");
    }

    /// <summary>Min-max asymmetric rounding with the same groups, fp16 meta-data and zero rounding rule, no solver.</summary>
    static Tensor RoundToNearest(Tensor w, HqqFormat spec)
    {
        var g = w.reshape(-1, spec.GroupSize);
        var min = g.amin([1], keepdim: true);
        var max = g.amax([1], keepdim: true);
        int top = (1 << spec.Bits) - 1;
        var s = (max - min).reciprocal() * (float)top;
        var z = -min * s;
        if (spec.Bits == 4) z = z.round();
        var q = (g * s + z).round().clamp(0, top);
        var scale = s.reciprocal().to(ScalarType.Float16).to(ScalarType.Float32);
        return ((q - z.to(ScalarType.Float16).to(ScalarType.Float32)) * scale).reshape(w.shape);
    }

    [Fact]
    public void Dequantize_is_codes_minus_zero_times_scale_from_the_fp16_meta_data()
    {
        using var g = new Generator(3);
        using var w = randn([8, 16], generator: g);
        var q = HqqWeight.Quantize(w, new HqqFormat(4, 16));
        var codes = Floats(q.Codes());
        var scale = Floats(q.Scale);
        var zero = Floats(q.Zero);
        var expected = codes.Select((c, i) => (c - zero[i / 16]) * scale[i / 16]).ToArray();
        AssertBitsEqual(expected, Floats(q.Dequantize(ScalarType.Float32)), "dequantized");
        Assert.Equal(ScalarType.Float16, q.Scale.dtype);
        Assert.Equal(8L * 16 / 2 + 8 * 4, q.StorageBytes);
    }

    [Fact]
    public void Groups_that_do_not_tile_the_weight_or_pack_are_one_line_errors()
    {
        using var w = zeros(3, 10);
        var e = Assert.Throws<ArgumentException>(() => HqqWeight.Quantize(w, new HqqFormat(4, 8), "a.weight"));
        Assert.Contains("a.weight", e.Message);
        Assert.Contains("does not divide its 30 weights", e.Message);
        using var odd = zeros(3, 8);   // 3 groups: hqq packs 4-bit codes in two halves
        e = Assert.Throws<ArgumentException>(() => HqqWeight.Quantize(odd, new HqqFormat(4, 8), "b.weight"));
        Assert.Contains("3 groups is odd", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Gradient_to_the_input_is_that_of_a_dense_linear_over_the_dequantized_weight()
    {
        using var g = new Generator(4);
        using var wt = randn([16, 32], generator: g);
        var stored = HqqWeight.Quantize(wt, new HqqFormat(3, 16));
        using var linear = new HqqLinear(stored, ScalarType.Float32);
        using var x = randn([4, 32], generator: g).requires_grad_(true);
        using var gy = randn([4, 16], generator: g);
        using var y = linear.forward(x);
        y.backward([gy]);
        using var x2 = x.detach().clone().requires_grad_(true);
        using var y2 = nn.functional.linear(x2, stored.Dequantize(ScalarType.Float32));
        y2.backward([gy]);
        Assert.True(Bits.Same(y2, y));
        Assert.True(Bits.Same(x2.grad!, x.grad!));
    }
}
