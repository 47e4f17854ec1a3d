using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class LinearQuantTests
{
    [Fact]
    public void Int8_symmetric_per_tensor_hand_case()
    {
        // max|r| = 127 -> s = 1; q = round(r): -64.4 -> -64, 3.6 -> 4.
        var q = Quantize([[127f, -64.4f], [3.6f, 0f]], "int8-tensor");
        Assert.Equal(new sbyte[] { 127, -64, 4, 0 }, q.Codes.data<sbyte>().ToArray());
        AssertBitsEqual([1f], Floats(q.Scales), "scale");
        Assert.Null(q.ZeroPoints);
        AssertBitsEqual([127f, -64f, 4f, 0f], Floats(q.Dequantize(ScalarType.Float32)), "dequantized");
    }

    [Fact]
    public void Int8_asymmetric_per_tensor_hand_case()
    {
        // rmin = -10, rmax = 245 -> s = 255 / 255 = 1, z = round(-128 + 10) = -118; q = r - 118.
        var q = Quantize([[-10f, 245f], [0f, 100.25f]], "int8-tensor-asym");
        AssertBitsEqual([1f], Floats(q.Scales), "scale");
        Assert.Equal(new sbyte[] { -118 }, q.ZeroPoints!.data<sbyte>().ToArray());
        Assert.Equal(new sbyte[] { -128, 127, -118, -18 }, q.Codes.data<sbyte>().ToArray());
        AssertBitsEqual([-10f, 245f, 0f, 100f], Floats(q.Dequantize(ScalarType.Float32)), "dequantized");
    }

    [Fact]
    public void Int8_symmetric_per_channel_hand_case()
    {
        // Row scales 127/127 = 1 and 254/127 = 2.
        var q = Quantize([[127f, 50f], [254f, -100f]], "int8-channel");
        AssertBitsEqual([1f, 2f], Floats(q.Scales), "scales");
        Assert.Equal(new sbyte[] { 127, 50, 127, -50 }, q.Codes.data<sbyte>().ToArray());
    }

    [Fact]
    public void Int4_symmetric_per_group_hand_case_rounds_half_to_even_and_packs_high_nibble_first()
    {
        // Groups of 2: [127, 1] -> s = 127/7, q = [7, 0]; [14, 7] -> s = 2, q = [7, round(3.5) = 4].
        var q = Quantize([[127f, 1f, 14f, 7f]], "int4-g2");
        AssertBitsEqual([127f / 7f, 2f], Floats(q.Scales), "scales");
        Assert.Equal(new byte[] { 0x70, 0x74 }, Bytes(q.Codes));
        AssertBitsEqual([127f, 0f, 14f, 8f], Floats(q.Dequantize(ScalarType.Float32)), "dequantized");
    }

    [Fact]
    public void Int4_asymmetric_per_group_hand_case()
    {
        // [0, 15]: s = 1, z = -8, q = [-8, 7]; [-3, 12]: s = 1, z = round(-8 + 3) = -5, q = [-8, 7].
        var q = Quantize([[0f, 15f, -3f, 12f]], "int4-g2-asym");
        Assert.Equal(new sbyte[] { -8, -5 }, q.ZeroPoints!.data<sbyte>().ToArray());
        Assert.Equal(new byte[] { 0x87, 0x87 }, Bytes(q.Codes)); // -8 = 0b1000, 7 = 0b0111
        AssertBitsEqual([0f, 15f, -3f, 12f], Floats(q.Dequantize(ScalarType.Float32)), "dequantized");
    }

    [Theory]
    [InlineData("int8")]
    [InlineData("int8-asym")]
    [InlineData("int8-tensor")]
    [InlineData("int4")]
    [InlineData("int4-g64")]
    [InlineData("int4-g32-asym")]
    [InlineData("int4-tensor-asym")]
    public void Tensor_path_equals_the_reference_and_errors_stay_within_half_a_step(string format)
    {
        var spec = (LinearQuantFormat)BaseFormat.Parse(format);
        var data = Normal(24 * 128, seed: format.Length, sigma: 0.1f);
        data[7] = 0f;
        var fast = LinearQuantWeight.Quantize(tensor(data, [24, 128]), spec);
        var reference = LinearQuantReference.Quantize(data, [24, 128], spec);

        Assert.Equal(RawBytes(reference.Codes), RawBytes(fast.Codes));
        AssertBitsEqual(Floats(reference.Scales), Floats(fast.Scales), "scales");
        if (!spec.Symmetric)
            Assert.Equal(RawBytes(reference.ZeroPoints!), RawBytes(fast.ZeroPoints!));
        var back = Floats(fast.Dequantize(ScalarType.Float32));
        AssertBitsEqual(LinearQuantReference.Dequantize(reference), back, "dequantized");

        var scales = Floats(fast.Scales);
        int groupLength = data.Length / scales.Length;
        for (int i = 0; i < data.Length; i++)
            Assert.True(MathF.Abs(data[i] - back[i]) <= scales[i / groupLength] * 0.5f * (1 + 1e-5f), $"{format} element {i}");
        Assert.Equal(spec.StorageBytes(24, 128), fast.StorageBytes);
        Assert.Equal(format, fast.FormatName);
    }

    [Fact]
    public void All_zero_group_gets_scale_one_and_round_trips_to_zero()
    {
        var q = Quantize([[0f, 0f], [1f, -2f]], "int4-channel-asym");
        AssertBitsEqual([1f], Floats(q.Scales)[..1], "zero row scale");
        AssertBitsEqual([0f, 0f], Floats(q.Dequantize(ScalarType.Float32))[..2], "zero row");
    }

    [Fact]
    public void Group_size_that_does_not_divide_in_features_is_a_one_line_error()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            LinearQuantWeight.Quantize(zeros(4, 48), (LinearQuantFormat)BaseFormat.Parse("int4-g32"), "layers.0.mlp.up_proj.weight"));
        Assert.Contains("layers.0.mlp.up_proj.weight", e.Message);
        Assert.Contains("48", e.Message);
    }

    static LinearQuantWeight Quantize(float[][] rows, string format) =>
        LinearQuantWeight.Quantize(tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]),
            (LinearQuantFormat)BaseFormat.Parse(format));
}
