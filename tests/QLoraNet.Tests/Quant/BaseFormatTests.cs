using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

public class BaseFormatTests
{
    [Theory]
    [InlineData("none", "none")]
    [InlineData("BF16", "bf16")]
    [InlineData("fp32", "fp32")]
    [InlineData("nf4", "nf4")]
    [InlineData("nf4-dq", "nf4-dq")]
    [InlineData("nf4-b64-dq", "nf4-dq")]
    [InlineData("fp4-b128", "fp4-b128")]
    [InlineData("nf4-dq512", "nf4-dq512")]
    [InlineData("int8", "int8")]
    [InlineData("int8-channel-sym", "int8")]
    [InlineData("int8-tensor-asym", "int8-tensor-asym")]
    [InlineData("int4-g64", "int4-g64")]
    public void Parses_and_prints_the_canonical_name(string text, string canonical)
    {
        var spec = BaseFormat.Parse(text);
        Assert.Equal(canonical, spec.ToString());
        Assert.Equal(spec, BaseFormat.Parse(canonical));
    }

    [Fact]
    public void Parsed_values_are_the_documented_defaults()
    {
        Assert.Equal(new FourBitFormat(FourBitType.Nf4, 64, true, 256), BaseFormat.Parse("nf4-dq"));
        Assert.Equal(new LinearQuantFormat(4, QuantGranularity.PerGroup, 64, true), BaseFormat.Parse("int4-g64"));
        Assert.Equal(new LinearQuantFormat(8, QuantGranularity.PerChannel, 0, true), BaseFormat.Parse("int8"));
        Assert.Equal(new DenseFormat(ScalarType.BFloat16), BaseFormat.Parse("bf16"));
    }

    [Theory]
    [InlineData("nf5")]
    [InlineData("nf4-fast")]
    [InlineData("int4-gx")]
    [InlineData("bf16-dq")]
    [InlineData("")]
    public void Unknown_formats_are_one_line_errors_naming_the_input(string text)
    {
        var e = Assert.Throws<FormatException>(() => BaseFormat.Parse(text));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains(text.Split('-').Last(), e.Message);
    }

    [Fact]
    public void Sizes_are_exact_functions_of_the_shape()
    {
        // 4096 x 4096: 16 Mi weights, 256 Ki blocks of 64, 1 Ki nested blocks of 256.
        const long rows = 4096, cols = 4096, n = rows * cols;
        Assert.Equal(32.0, BaseFormat.Parse("fp32").BitsPerWeight(rows, cols));
        Assert.Equal(16.0, BaseFormat.Parse("bf16").BitsPerWeight(rows, cols));
        Assert.Equal(n / 2 + 4 * (n / 64), BaseFormat.Parse("nf4").StorageBytes(rows, cols));
        Assert.Equal(n / 2 + 4 * (n / 64), BaseFormat.Parse("fp4").StorageBytes(rows, cols));
        Assert.Equal(n / 2 + n / 64 + 4 * (n / 64 / 256) + 4, BaseFormat.Parse("nf4-dq").StorageBytes(rows, cols));
        Assert.InRange(BaseFormat.Parse("nf4-dq").BitsPerWeight(rows, cols), 4.126, 4.128);
        Assert.Equal(n + 4 * rows, BaseFormat.Parse("int8").StorageBytes(rows, cols));
        Assert.Equal(n / 2 + 4 * (n / 64), BaseFormat.Parse("int4-g64").StorageBytes(rows, cols));
        Assert.Equal(n / 2 + 5 * (n / 64), BaseFormat.Parse("int4-g64-asym").StorageBytes(rows, cols));
    }
}
