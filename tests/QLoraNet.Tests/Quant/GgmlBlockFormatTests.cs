using QLoraNet.Formats;
using QLoraNet.Quant;
using QLoraNet.Quant.Ggml;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

/// <summary>
/// GGUF's q4_0 / q8_0 as base formats: the stored codes and scales are the bytes `export --type` writes (held to
/// Formats' per-element transcriptions of llama.cpp's quantize_row_q4_0_ref / q8_0_ref), the round trip is the
/// GGUF file's dequantized weight bit for bit, sizes, the frozen linear, spellings and the row-length error.
/// </summary>
[Trait("tier", "unit")]
public class GgmlBlockFormatTests
{
    /// <summary>Random rows with the edge cases planted: an all-zero block, a tie of +m and -m (the first wins),
    /// a block of equal values, values on q8_0's half-way points (amax 127: d = 1).</summary>
    static float[] Weights(int rows, int cols, int seed)
    {
        var w = Normal(rows * cols, seed, 0.05f);
        Array.Clear(w, 0, 32);                                                             // block 0: all zero
        (w[32], w[40]) = (0.3f, -0.3f);                                                    // block 1: tie, first wins
        for (int j = 64; j < 96; j++) w[j] = -0.125f;                                      // block 2: all equal
        for (int j = 96; j < 128; j++) w[j] = j == 96 ? 127f : (j - 96) + 0.5f - 16f;       // block 3: halves at d = 1
        return w;
    }

    /// <summary>ggml's block bytes from the stored parts: per block the fp16 scale, then the codes.</summary>
    static byte[] GgmlBytes(GgmlBlockWeight w)
    {
        var scales = RawBytes(w.Scales);
        var codes = RawBytes(w.Codes);
        int n = scales.Length / 2, payload = codes.Length / n;
        var y = new byte[n * (2 + payload)];
        for (int b = 0; b < n; b++)
        {
            (y[b * (2 + payload)], y[b * (2 + payload) + 1]) = (scales[2 * b], scales[2 * b + 1]);
            Array.Copy(codes, b * payload, y, b * (2 + payload) + 2, payload);
        }
        return y;
    }

    [Theory]
    [InlineData("q4_0")]
    [InlineData("q8_0")]
    public void Codes_scales_and_round_trip_are_the_gguf_files(string spelling)
    {
        var format = (GgmlBlockFormat)BaseFormat.Parse(spelling);
        const int rows = 6, cols = 128;
        var x = Weights(rows, cols, 61);
        using var w = tensor(x).reshape(rows, cols);
        var stored = GgmlBlockWeight.Quantize(w, format);
        bool q4 = format.Type == GgmlBlockType.Q4_0;
        var reference = q4 ? GgufQ4_0.QuantizeReference(x) : GgufQ8_0.QuantizeReference(x);
        Assert.Equal(reference, GgmlBytes(stored));

        // The round trip is what llama.cpp dequantizes from the file, bit for bit.
        var file = new GgmlBlocks(q4 ? GgmlType.Q4_0 : GgmlType.Q8_0, [rows, cols], reference);
        using var fromFile = q4 ? GgufQ4_0.Dequantize(file) : GgufQ8_0.Dequantize(file);
        using var roundTrip = format.RoundTrip(w);
        AssertTensorsIdentical(fromFile, roundTrip, $"{spelling} round trip");
        using var fake = format.FakeQuantization!.Weight(w);
        AssertTensorsIdentical(fromFile, fake, $"{spelling} fake quantization");
    }

    [Theory]
    [InlineData("q4_0", 4.5)]
    [InlineData("q8_0", 8.5)]
    public void Sizes_are_whole_blocks_of_fp16_scale_and_codes(string spelling, double bits)
    {
        var format = BaseFormat.Parse(spelling);
        Assert.Equal(bits, format.BitsPerWeight(64, 256));
        using var w = tensor(Normal(64 * 256, 62, 0.05f)).reshape(64, 256);
        using var linear = format.Create(w, ScalarType.Float32, KernelSelection.Portable);
        Assert.Equal(format.StorageBytes(64, 256), linear.StorageBytes);
        Assert.Equal(spelling, linear.FormatName);
        // -f16: a weight whose rows are not whole blocks is held in fp16, as GGUF export writes it.
        var fallback = BaseFormat.Parse(spelling + "-f16");
        Assert.Equal(10L * 48 * 2, fallback.StorageBytes(10, 48));
        Assert.Equal(format.StorageBytes(64, 256), fallback.StorageBytes(64, 256));
    }

    [Fact]
    public void The_frozen_linear_computes_with_the_round_tripped_weight()
    {
        var format = BaseFormat.Parse("q4_0");
        using var w = tensor(Normal(16 * 64, 63, 0.05f)).reshape(16, 64);
        using var x = tensor(Normal(3 * 64, 64)).reshape(3, 64).requires_grad_(true);
        using var linear = format.Create(w, ScalarType.Float32, KernelSelection.Portable);
        using var q = format.RoundTrip(w);
        using var y = linear.call(x);
        using (var expected = nn.functional.linear(x.detach(), q)) AssertTensorsIdentical(expected, y.detach(), "forward");
        y.sum().backward();
        using var dx = ones(3, 16).matmul(q);
        AssertTensorsIdentical(dx, x.grad!, "d y / d x");
    }

    [Fact]
    public void Rows_that_are_not_whole_blocks_are_refused_naming_the_tensor_unless_f16_is_asked_for()
    {
        using var w = tensor(Normal(4 * 48, 65, 0.05f)).reshape(4, 48);
        var e = Assert.Throws<ArgumentException>(() => BaseFormat.Parse("q4_0").Create(w, ScalarType.Float32, KernelSelection.Portable, "model.layers.0.mlp.down_proj.weight"));
        Assert.Equal("cannot quantize tensor 'model.layers.0.mlp.down_proj.weight' to q4_0: its rows have 48 values, not a multiple of ggml's 32-value block; use q4_0-f16 to keep such weights in fp16 as GGUF export does", e.Message);
        using var half = BaseFormat.Parse("q4_0-f16").RoundTrip(w);
        using var expected = w.to(ScalarType.Float16).to(ScalarType.Float32);
        AssertTensorsIdentical(expected, half, "fp16 fallback");
    }

    [Fact]
    public void Spellings()
    {
        Assert.Equal("q4_0", BaseFormat.Parse("Q4_0").ToString());
        Assert.Equal("q8_0-f16", BaseFormat.Parse("q8_0-f16").ToString());
        Assert.Equal(BaseFormat.Parse("q4_0"), new GgmlBlockFormat(GgmlBlockType.Q4_0));
        Assert.Contains("q4_0 takes only -f16", Assert.Throws<FormatException>(() => BaseFormat.Parse("q4_0-g64")).Message);
        Assert.Null(BaseFormat.Parse("q4_0").Layout);
        Assert.Contains("q4_0", BaseFormats.AwareNames);
        Assert.Contains("q8_0", BaseFormats.AwareNames);
    }
}
