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
    [InlineData("llm-int8", "llm-int8")]
    [InlineData("LLM-INT8-t6", "llm-int8")]
    [InlineData("llm-int8-t6.0", "llm-int8")]
    [InlineData("llm-int8-t4", "llm-int8-t4")]
    [InlineData("llm-int8-t3.5", "llm-int8-t3.5")]
    [InlineData("hqq4", "hqq4")]
    [InlineData("hqq4-g64", "hqq4")]
    [InlineData("hqq3-g128", "hqq3-g128")]
    [InlineData("hqq2-g32", "hqq2-g32")]
    [InlineData("hqq8", "hqq8")]
    [InlineData("ternary", "ternary")]
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
        Assert.Equal(n + 4 * rows, BaseFormat.Parse("llm-int8").StorageBytes(rows, cols));              // int8 codes + fp32 SCB
        Assert.Equal(n / 2 + 4 * (n / 64), BaseFormat.Parse("hqq4").StorageBytes(rows, cols));          // fp16 scale + zero per 64
        Assert.Equal(4.5, BaseFormat.Parse("hqq4").BitsPerWeight(rows, cols));
        Assert.Equal(4 * ((n / 64 + 9) / 10) * 64 + 4 * (n / 64), BaseFormat.Parse("hqq3").StorageBytes(rows, cols)); // ten 3-bit codes per int32
        Assert.Equal(n / 4 + 4 * (n / 64), BaseFormat.Parse("hqq2").StorageBytes(rows, cols));
        Assert.Equal(n / 4 + 2, BaseFormat.Parse("ternary").StorageBytes(rows, cols));                 // 2 bits + one bf16 scale
    }

    [Fact]
    public void New_kinds_read_their_structured_yaml_keys()
    {
        Assert.Equal("t4", LlmInt8Format.Kind.StructuredOption("threshold", "4"));
        Assert.Null(LlmInt8Format.Kind.StructuredOption("threshold", "6.0"));
        Assert.Contains("above 0", Assert.Throws<FormatException>(() => LlmInt8Format.Kind.StructuredOption("threshold", "0")).Message);
        Assert.Equal("g128", HqqFormat.Kind.StructuredOption("group_size", "128"));
        Assert.Null(HqqFormat.Kind.StructuredOption("group_size", "64"));
        Assert.Contains("multiple of 8", Assert.Throws<FormatException>(() => HqqFormat.Kind.StructuredOption("group_size", "100")).Message);
        Assert.Equal(new HqqFormat(3, 32), BaseFormat.Parse("hqq3-g32"));
        Assert.Equal(new LlmInt8Format(4), BaseFormat.Parse("llm-int8-t4"));
        Assert.Throws<ArgumentException>(() => new HqqFormat(5));
        Assert.Throws<ArgumentException>(() => new LlmInt8Format(0));
    }

    [Theory]
    [InlineData("nf4-b8", "blocksize must be a power of two in [16, 4096]; got 8")]   // the CUDA kernel needs >= 8; bitsandbytes >= 16
    [InlineData("nf4-b48", "blocksize must be a power of two in [16, 4096]; got 48")]
    [InlineData("fp4-b8192", "blocksize must be a power of two in [16, 4096]; got 8192")]
    [InlineData("nf4-dq3", "nested blocksize must be a power of two in [2, 4096]; got 3")]
    [InlineData("int4-g0", "bad size 'g0'")]
    [InlineData("llm-int8-t0", "threshold must be a number above 0; got 0")]
    [InlineData("llm-int8-t-1", "threshold must be a number above 0; got -1")]
    [InlineData("llm-int8-tNaN", "threshold must be a number above 0; got NaN")]
    [InlineData("llm-int8-x", "llm-int8 takes -t<threshold>")]
    [InlineData("hqq5", "5 bits are not supported; hqq takes 2, 3, 4 or 8 bits")]
    [InlineData("hqq1-g64", "1 bits are not supported")]
    [InlineData("hqq4-g12", "group size must be a multiple of 8 in [8, 8192]; got 12")]
    [InlineData("hqq4-g0", "group size must be a multiple of 8")]
    [InlineData("hqq4-g16384", "got 16384")]
    [InlineData("hqq4-b64", "hqq4 takes -g<groupsize>")]
    [InlineData("ternary-a8", "ternary takes no options")]
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
        Assert.Equal(["none", "bf16", "fp16", "fp32", "nf4", "fp4", "int8", "int4", "int3", "llm-int8", "hqq2", "hqq3", "hqq4", "hqq8", "ternary", "q4_0", "q8_0", "gptq2", "gptq3", "gptq4", "gptq8", "awq4", "smoothquant"], BaseFormats.Names);
        Assert.Same(FourBitFormat.Kind, BaseFormats.KindOf("fp4"));
        Assert.Same(LinearQuantFormat.Kind, BaseFormats.KindOf("int4"));
        Assert.Same(HqqFormat.Kind, BaseFormats.KindOf("hqq4"));
        Assert.Same(HqqFormat.Kind, BaseFormats.KindOf("hqq5"));   // claimed, so that it gets its own error
        Assert.Null(BaseFormats.KindOf("llm"));
        Assert.Same(BitsAndBytesEightBitLayout.Instance, BaseFormat.Parse("llm-int8-t4").Layout);
        Assert.Same(HqqLayout.Instance, BaseFormat.Parse("hqq3-g128").Layout);
        Assert.Same(BitNetTernaryLayout.Instance, BaseFormat.Parse("ternary").Layout);
        // BitNet and compressed-tensors W8A8 both keep "...weight_scale": the quant_method tells them apart.
        static System.Text.Json.Nodes.JsonObject Method(string m) => new() { ["quant_method"] = m };
        Assert.DoesNotContain(BitNetTernaryLayout.Instance, BaseFormats.LayoutsFor(Method("compressed-tensors")));
        Assert.DoesNotContain(QLoraNet.Quant.SmoothQuant.W8A8Layout.Instance, BaseFormats.LayoutsFor(Method("bitnet")));
        Assert.Equal([HqqLayout.Instance], BaseFormats.LayoutsFor(Method("hqq")).ToList());
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
