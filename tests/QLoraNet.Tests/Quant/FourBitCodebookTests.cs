using QLoraNet.Quant;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "parity")]
public class FourBitCodebookTests
{
    [Fact]
    public void Nf4_values_are_bitsandbytes_exactly()
    {
        float[] expected =
        [
            -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
            -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
            0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
        ];
        AssertBitsEqual(expected, FourBitCodebook.Values(FourBitType.Nf4), "nf4");
    }

    [Fact]
    public void Fp4_values_are_bitsandbytes_map_in_bit_pattern_order_divided_by_12()
    {
        float[] raw = [0, 0.0625f, 8, 12, 4, 6, 2, 3];
        var expected = raw.Select(v => v / 12f).Concat(raw.Select(v => -v / 12f)).ToArray();
        var fp4 = FourBitCodebook.Values(FourBitType.Fp4);
        AssertBitsEqual(expected, fp4, "fp4");
        Assert.True(float.IsNegative(fp4[8]), "code 0b1000 is -0.0 as in bitsandbytes' quant_map");
        Assert.Equal(1f, fp4[0b0011]);
        Assert.Equal(0.5f, fp4[0b0101]);
    }

    [Fact]
    public void Nf4_thresholds_are_the_bitsandbytes_cuda_pivots_up_to_one_ulp_and_exactly_nearest()
    {
        // csrc/kernels.cu dQuantizeNF4 pivots, ascending.
        float[] cuda =
        [
            -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
            -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f, 0.2035212516784668f,
            0.2920137718319893f, 0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
        ];
        var ours = FourBitCodebook.Thresholds(FourBitType.Nf4);
        var values = FourBitCodebook.Values(FourBitType.Nf4);
        for (int i = 0; i < 15; i++)
        {
            Assert.True(cuda[i] == ours[i] || cuda[i] == MathF.BitIncrement(ours[i]), $"threshold {i}: {ours[i]:R} vs cuda {cuda[i]:R}");
            // ours: the largest float at or below the exact midpoint, so "x > threshold" is exact nearest-code rounding
            double exact = ((double)values[i] + values[i + 1]) / 2;
            Assert.True(ours[i] <= exact && MathF.BitIncrement(ours[i]) > exact, $"threshold {i} not the floor of the midpoint");
        }
    }

    [Fact]
    public void Dynamic_map_has_bitsandbytes_structure()
    {
        var map = DynamicMap.Values();
        Assert.Equal(256, map.Length);
        for (int i = 1; i < 256; i++) Assert.True(map[i - 1] < map[i], $"map not strictly ascending at {i}");
        Assert.Equal(0f, map[127]);
        Assert.Equal(1f, map[255]);
        // The largest non-one magnitude is the last midpoint of linspace(0.1, 1, 65); the smallest is 1e-6 * 0.55.
        Assert.Equal(-0.99296875f, map[0]);
        Assert.Equal(0.99296875f, map[254]);
        Assert.Equal((float)(0.55f * (float)1e-6), map[128]);
        Assert.Equal(-map[128], map[126]);
    }
}
