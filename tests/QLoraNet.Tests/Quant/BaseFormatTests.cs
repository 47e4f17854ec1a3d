using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
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

    [Theory]
    [InlineData("nf4-b8", "blocksize must be a power of two in [16, 4096]; got 8")]   // the CUDA kernel needs >= 8; bitsandbytes >= 16
    [InlineData("nf4-b48", "blocksize must be a power of two in [16, 4096]; got 48")]
    [InlineData("fp4-b8192", "blocksize must be a power of two in [16, 4096]; got 8192")]
    [InlineData("nf4-dq3", "nested blocksize must be a power of two in [2, 4096]; got 3")]
    [InlineData("int4-g0", "bad size 'g0'")]
    public void Block_and_group_sizes_are_validated_when_parsed(string text, string expected)
    {
        var e = Assert.Throws<FormatException>(() => BaseFormat.Parse(text));
        Assert.Contains(expected, e.Message);
        Assert.Contains(text, e.Message);
    }

    [Fact]
    public void A_format_value_cannot_be_built_invalid_either()
    {
        Assert.Throws<ArgumentException>(() => new FourBitFormat(FourBitType.Nf4, BlockSize: 8));
        Assert.Throws<ArgumentException>(() => new LinearQuantFormat(5));
        Assert.Throws<ArgumentException>(() => new LinearQuantFormat(4, QuantGranularity.PerChannel, GroupSize: 64));
        Assert.Throws<ArgumentException>(() => new DenseFormat(ScalarType.Int8));
    }

    [Fact]
    public void The_registry_maps_each_name_to_its_kind_and_each_format_to_its_layout()
    {
        Assert.Equal(["none", "bf16", "fp16", "fp32", "nf4", "fp4", "int8", "int4", "int3", "gptq2", "gptq3", "gptq4", "gptq8", "awq4", "smoothquant"], BaseFormats.Names);
        Assert.Same(FourBitFormat.Kind, BaseFormats.KindOf("fp4"));
        Assert.Same(LinearQuantFormat.Kind, BaseFormats.KindOf("int4"));
        Assert.Null(BaseFormats.KindOf("hqq4"));
        Assert.Same(BitsAndBytesFourBitLayout.Instance, BaseFormat.Parse("nf4-dq").Layout);
        Assert.Null(BaseFormat.Parse("int8").Layout);
        Assert.Null(BaseFormat.Parse("bf16").Layout);
        Assert.Contains("nf4|fp4[-b<N>][-dq]", BaseFormats.Syntax);
    }

    [Fact]
    public void Structured_yaml_keys_map_to_spelling_options_per_kind()
    {
        Assert.Equal("dq", FourBitFormat.Kind.StructuredOption("double_quant", "true"));
        Assert.Null(FourBitFormat.Kind.StructuredOption("double_quant", "false"));
        Assert.Equal("b128", FourBitFormat.Kind.StructuredOption("blocksize", "128"));
        Assert.Null(FourBitFormat.Kind.StructuredOption("blocksize", "64"));   // the spelling's default adds nothing
        Assert.Equal("g128", LinearQuantFormat.Kind.StructuredOption("blocksize", "128"));
        Assert.Equal(["blocksize"], LinearQuantFormat.Kind.StructuredKeys);
        Assert.Contains("power of two", Assert.Throws<FormatException>(() => FourBitFormat.Kind.StructuredOption("blocksize", "100")).Message);
    }

    [Fact]
    public void Bitsandbytes_layout_round_trips_a_weight_and_names_its_format()
    {
        using var w = torch.randn(8, 64);
        var layout = BitsAndBytesFourBitLayout.Instance;
        var format = BaseFormat.Parse("fp4-b16-dq");
        var tensors = layout.Write(w, format, "model.layers.0.mlp.up_proj.weight");
        try
        {
            Assert.True(layout.IsStored("model.layers.0.mlp.up_proj.weight", tensors.ContainsKey));
            Assert.True(layout.IsStateKey("model.layers.0.mlp.up_proj.weight.nested_absmax", out var owner));
            Assert.Equal("model.layers.0.mlp.up_proj.weight", owner);
            Assert.Equal(format, layout.FormatOf(tensors, "model.layers.0.mlp.up_proj.weight"));
            using var read = layout.Read(tensors, "model.layers.0.mlp.up_proj.weight", [8, 64], CPU, ScalarType.Float32, QLoraNet.Quant.Kernels.KernelSelection.Portable);
            using var again = format.Create(w, ScalarType.Float32, QLoraNet.Quant.Kernels.KernelSelection.Portable);
            Assert.True(read.DequantizeWeight(ScalarType.Float32).eq(again.DequantizeWeight(ScalarType.Float32)).all().item<bool>());
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }
}
