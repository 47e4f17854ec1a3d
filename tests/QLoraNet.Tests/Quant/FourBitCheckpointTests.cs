using System.Text;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class FourBitCheckpointTests
{
    const string Prefix = "model.layers.0.self_attn.q_proj.";

    [Fact]
    public void Double_quantized_weight_has_bitsandbytes_keys_shapes_and_dtypes()
    {
        using var scope = NewDisposeScope();
        var q = FourBitWeight.Quantize(tensor(Normal(64 * 1024, seed: 20), [64, 1024]).to(ScalarType.BFloat16), FourBitType.Nf4, doubleQuant: true);
        var d = FourBitCheckpoint.ToTensors(q, Prefix);

        Assert.Equal(
            new[] { "weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4" }
                .Select(k => Prefix + k).Order(),
            d.Keys.Order());
        AssertDTypeShape(ScalarType.Byte, [32768, 1], d[Prefix + "weight"]);
        AssertDTypeShape(ScalarType.Byte, [1024], d[Prefix + "weight.absmax"]);
        AssertDTypeShape(ScalarType.Float32, [4], d[Prefix + "weight.nested_absmax"]);
        Assert.Equal(new long[] { 16 }, d[Prefix + "weight.quant_map"].shape);
        Assert.Equal(new long[] { 256 }, d[Prefix + "weight.nested_quant_map"].shape);

        var offset = ((DoubleQuantizedScales)q.Scales).Offset;
        string json = Encoding.UTF8.GetString(Bytes(d[Prefix + "weight.quant_state.bitsandbytes__nf4"]));
        Assert.StartsWith("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [64, 1024], " +
                          "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ", json);
        Assert.Equal(offset, (float)double.Parse(json[(json.LastIndexOf(':') + 2)..^1], System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Plain_fp4_weight_has_fp32_absmax_and_no_nested_keys()
    {
        using var scope = NewDisposeScope();
        var q = FourBitWeight.Quantize(tensor(Normal(8 * 64, seed: 21), [8, 64]), FourBitType.Fp4, blockSize: 128);
        var d = FourBitCheckpoint.ToTensors(q, "");
        Assert.Equal(new[] { "weight", "weight.absmax", "weight.quant_map", "weight.quant_state.bitsandbytes__fp4" }.Order(), d.Keys.Order());
        Assert.Equal(ScalarType.Float32, d["weight.absmax"].dtype);
        Assert.Equal("{\"quant_type\": \"fp4\", \"blocksize\": 128, \"dtype\": \"float32\", \"shape\": [8, 64]}",
            Encoding.UTF8.GetString(Bytes(d["weight.quant_state.bitsandbytes__fp4"])));
    }

    [Theory]
    [InlineData(FourBitType.Nf4, true)]
    [InlineData(FourBitType.Nf4, false)]
    [InlineData(FourBitType.Fp4, true)]
    public void Round_trip_through_the_dictionary_is_bit_identical(FourBitType type, bool doubleQuant)
    {
        using var scope = NewDisposeScope();
        var q = FourBitWeight.Quantize(tensor(Normal(96 * 640, seed: 22), [96, 640]), type, doubleQuant: doubleQuant);
        var first = FourBitCheckpoint.ToTensors(q, Prefix);
        var back = FourBitCheckpoint.FromTensors(first, Prefix);
        var second = FourBitCheckpoint.ToTensors(back, Prefix);

        Assert.Equal(first.Keys.Order(), second.Keys.Order());
        foreach (var key in first.Keys)
            AssertTensorsIdentical(first[key], second[key], key);
        AssertBitsEqual(Floats(q.Dequantize(ScalarType.Float32)), Floats(back.Dequantize(ScalarType.Float32)), "dequantized");
        Assert.Equal(q.Shape, back.Shape);
        Assert.True(FourBitCheckpoint.Contains(first, Prefix));
    }

    [Fact]
    public void Missing_or_inconsistent_state_is_a_one_line_error_naming_the_key()
    {
        using var scope = NewDisposeScope();
        var q = FourBitWeight.Quantize(tensor(Normal(64 * 64, seed: 23), [64, 64]), FourBitType.Nf4, doubleQuant: true);
        var stateKey = Prefix + "weight.quant_state.bitsandbytes__nf4";

        var noNested = FourBitCheckpoint.ToTensors(q, Prefix);
        noNested.Remove(Prefix + "weight.nested_absmax");
        AssertOneLineError(noNested, Prefix + "weight.nested_absmax");

        var noState = FourBitCheckpoint.ToTensors(q, Prefix);
        noState.Remove(stateKey);
        AssertOneLineError(noState, stateKey);

        var wrongShape = FourBitCheckpoint.ToTensors(q, Prefix);
        wrongShape[stateKey] = tensor(Encoding.UTF8.GetBytes(
            Encoding.UTF8.GetString(Bytes(wrongShape[stateKey])).Replace("[64, 64]", "[64, 128]")));
        AssertOneLineError(wrongShape, Prefix + "weight");

        var notJson = FourBitCheckpoint.ToTensors(q, Prefix);
        notJson[stateKey] = tensor(Encoding.UTF8.GetBytes("{\"quant_type\": "));
        AssertOneLineError(notJson, stateKey);

        var otherMap = FourBitCheckpoint.ToTensors(q, Prefix);
        otherMap[Prefix + "weight.quant_map"] = tensor(FourBitCodebook.Values(FourBitType.Fp4));
        AssertOneLineError(otherMap, Prefix + "weight.quant_map");

        var wrongType = FourBitCheckpoint.ToTensors(q, Prefix);
        wrongType[stateKey] = tensor(Encoding.UTF8.GetBytes(
            Encoding.UTF8.GetString(Bytes(wrongType[stateKey])).Replace("\"nf4\"", "\"fp4\"")));
        AssertOneLineError(wrongType, stateKey);
    }

    [Theory]
    [InlineData(0.012345678918063641, "0.012345678918063641")]
    [InlineData(1.0, "1.0")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(1e-05, "1e-05")]
    [InlineData(1.5e-07, "1.5e-07")]
    [InlineData(123456.0, "123456.0")]
    [InlineData(1e16, "1e+16")]
    [InlineData(0.0, "0.0")]
    public void Offsets_are_written_like_python_repr(double value, string expected) =>
        Assert.Equal(expected, PythonFloat.Repr(value));

    static void AssertDTypeShape(ScalarType dtype, long[] shape, Tensor t)
    {
        Assert.Equal(dtype, t.dtype);
        Assert.Equal(shape, t.shape);
    }

    static void AssertOneLineError(Dictionary<string, Tensor> tensors, string key)
    {
        var e = Assert.ThrowsAny<Exception>(() => FourBitCheckpoint.FromTensors(tensors, Prefix));
        Assert.Contains(key, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
