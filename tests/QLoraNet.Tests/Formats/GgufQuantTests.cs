using QLoraNet.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Formats;

/// <summary>Q8_0 / Q4_0 blocks against hand-computed bytes (ggml-quants.c quantize_row_q8_0_ref / q4_0_ref).</summary>
[Trait("tier", "unit")]
public class GgufQuantTests
{
    [Fact]
    public void Q8_0_block_by_hand()
    {
        // x_j = (j - 16) / 2: amax 8, d = 8/127 = 0.0629921 -> fp16 0x2C08 (0.0625 * (1 + 8/1024)); q = round(x * 127/8)
        var x = Enumerable.Range(0, 32).Select(j => (j - 16) * 0.5f).ToArray();
        var y = GgufQ8_0.QuantizeReference(x);
        Assert.Equal(34, y.Length);
        Assert.Equal(new byte[] { 0x08, 0x2C }, y[..2]);
        Assert.Equal(-127, (sbyte)y[2 + 0]);
        Assert.Equal(-119, (sbyte)y[2 + 1]);     // -7.5 * 15.875 = -119.06
        Assert.Equal(0, (sbyte)y[2 + 16]);
        Assert.Equal(119, (sbyte)y[2 + 31]);
    }

    [Fact]
    public void Q8_0_rounds_halves_away_from_zero_like_roundf()
    {
        // amax 127 -> d = 1 exactly (fp16 0x3C00), so q = roundf(x): 2.5 -> 3, -2.5 -> -3, 0.5 -> 1 (round-half-even would give 2, -2, 0)
        var x = new float[32];
        (x[0], x[1], x[2], x[3], x[4]) = (127f, 2.5f, -2.5f, 0.5f, 1.5f);
        var expected = new byte[34];
        (expected[0], expected[1]) = (0x00, 0x3C);
        (expected[2], expected[3], expected[4], expected[5], expected[6]) = (127, 3, unchecked((byte)-3), 1, 2);
        Assert.Equal(expected, GgufQ8_0.QuantizeReference(x));
        Assert.Equal(expected, GgufQ8_0.Quantize(tensor(x)).Bytes.ToArray());
    }

    [Fact]
    public void Q4_0_block_by_hand()
    {
        // x_j = j - 16: the largest magnitude is x_0 = -16, so d = -16 / -8 = 2 (fp16 0x4000), 1/d = 0.5,
        // q_j = min(15, trunc((j - 16) * 0.5 + 8.5)); byte j = q_j | q_{j+16} << 4
        var x = Enumerable.Range(0, 32).Select(j => (float)(j - 16)).ToArray();
        var y = GgufQ4_0.QuantizeReference(x);
        Assert.Equal(18, y.Length);
        Assert.Equal(new byte[] { 0x00, 0x40 }, y[..2]);
        Assert.Equal(0x80, y[2 + 0]);    // q0 = trunc(0.5) = 0, q16 = trunc(8.5) = 8
        Assert.Equal(0x91, y[2 + 1]);    // q1 = 1, q17 = 9
        Assert.Equal(0xF8, y[2 + 15]);   // q15 = 8, q31 = min(15, 16) = 15
    }

    [Fact]
    public void Q4_0_takes_the_first_value_of_largest_magnitude_with_its_sign()
    {
        // x0 = 4 and x5 = -4 tie; the first wins: d = 4 / -8 = -0.5 (fp16 0xB800), so x0 -> code 0 and x5 -> 15 (clipped from 16)
        var x = new float[32];
        (x[0], x[5], x[6]) = (4f, -4f, 1f);
        var y = GgufQ4_0.QuantizeReference(x);
        Assert.Equal(new byte[] { 0x00, 0xB8 }, y[..2]);
        Assert.Equal(0x80, y[2 + 0]);    // q0 = trunc(4 * -2 + 8.5) = 0; q16 = trunc(8.5) = 8
        Assert.Equal(0x8F, y[2 + 5]);    // q5 = min(15, 16) = 15
        Assert.Equal(0x86, y[2 + 6]);    // q6 = trunc(-2 + 8.5) = 6
        Assert.Equal(y, GgufQ4_0.Quantize(tensor(x)).Bytes.ToArray());
    }

    [Fact]
    public void All_zero_blocks_have_zero_scale_and_middle_codes()
    {
        var x = new float[64];
        x[32] = -0.0f;
        var q8 = GgufQ8_0.QuantizeReference(x);
        var q4 = GgufQ4_0.QuantizeReference(x);
        Assert.All(q8, b => Assert.Equal(0, b));
        Assert.Equal(new byte[] { 0x00, 0x80 }, q4[..2]);    // d = +0 / -8 = -0.0 in the C code too
        Assert.All(q4[2..18], b => Assert.Equal(0x88, b));
        Assert.Equal(q8, GgufQ8_0.Quantize(tensor(x)).Bytes.ToArray());
        Assert.Equal(q4, GgufQ4_0.Quantize(tensor(x)).Bytes.ToArray());
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void Tensor_path_equals_the_per_element_reference(GgmlType type)
    {
        using var rng = new Generator(7);
        // Gaussian rows, rows with outliers, rows on a coarse grid (exact ties and .5 cases), a bf16 source
        var rows = cat(new[]
        {
            randn(64, 96, generator: rng),
            randn(8, 96, generator: rng) * (rand(8, 96, generator: rng).lt(0.05f).to(ScalarType.Float32) * 40 + 1),
            (randint(-16, 17, new long[] { 8, 96 }, generator: rng).to(ScalarType.Float32) / 4f),
            randn(8, 96, generator: rng).to(ScalarType.BFloat16).to(ScalarType.Float32),
        });
        var flat = rows.contiguous().data<float>().ToArray();
        var (fast, slow) = type == GgmlType.Q8_0
            ? (GgufQ8_0.Quantize(rows), GgufQ8_0.QuantizeReference(flat))
            : (GgufQ4_0.Quantize(rows), GgufQ4_0.QuantizeReference(flat));
        Assert.Equal(type, fast.Type);
        Assert.Equal(new long[] { 88, 96 }, fast.Shape);
        Assert.Equal(slow, fast.Bytes.ToArray());
    }

    [Fact]
    public void Dequantize_inverts_quantize_within_one_step()
    {
        using var rng = new Generator(3);
        var x = randn(16, 64, generator: rng);
        var blocks = x.reshape(-1, 32);
        var amax = blocks.abs().amax(new long[] { -1 }, keepdim: true);
        // Q8_0 step d = amax/127: error <= d/2, plus |q| <= 127 times the fp16 rounding of d (<= d * 2^-11): 0.57 d.
        // Q4_0 step |d| = amax/8: error <= |d|/2, except on the far side of the largest value where code 15 clips
        // at +7|d| (error up to |d|).
        var e8 = (GgufQ8_0.Dequantize(GgufQ8_0.Quantize(x)).reshape(-1, 32) - blocks).abs();
        Assert.True(e8.le(amax / 127f * 0.57f).all().item<bool>());
        var e4 = (GgufQ4_0.Dequantize(GgufQ4_0.Quantize(x)).reshape(-1, 32) - blocks).abs();
        Assert.True(e4.le(amax / 8f * 1.01f).all().item<bool>());
        Assert.True(e4.mean().item<float>() < e8.mean().item<float>() * 30);
        Assert.True(e4.mean().item<float>() > e8.mean().item<float>() * 5);
    }

    [Fact]
    public void Rows_that_are_not_whole_blocks_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => GgufQ8_0.Quantize(zeros(4, 40)));
        Assert.Contains("40", e.Message);
    }
}
