using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Quant.QuantTestData;

namespace QLoraNet.Tests.Quant;

[Trait("tier", "unit")]
public class FourBitWeightTests
{
    [Fact]
    public void Nf4_packs_even_element_in_high_nibble_on_a_hand_computed_example()
    {
        // absmax 1; nearest NF4 codes by hand: 1.0->15, -1->0, 0->7, 0.5->12 (midpoint 0.5017), -0.25->4
        // (midpoint -0.2346), 0.3->11 (midpoint 0.2920), 0->7, 0.72->14 (midpoint 0.6428).
        using var w = tensor(new float[] { 1.0f, -1.0f, 0.0f, 0.5f, -0.25f, 0.3f, 0.0f, 0.72f }, [2, 4]);
        var q = FourBitWeight.Quantize(w, FourBitType.Nf4, blockSize: 8);
        Assert.Equal(new byte[] { 0xF0, 0x7C, 0x4B, 0x7E }, Bytes(q.Packed));
        AssertBitsEqual([1f], Floats(((PlainScales)q.Scales).Absmax), "absmax");
        Assert.Equal(new long[] { 2, 4 }, q.Shape);
    }

    [Theory]
    [InlineData(FourBitType.Nf4, false)]
    [InlineData(FourBitType.Fp4, false)]
    [InlineData(FourBitType.Nf4, true)]
    [InlineData(FourBitType.Fp4, true)]
    public void A_value_exactly_on_a_midpoint_takes_the_lower_code_and_just_above_takes_the_upper(FourBitType type, bool useTorchOps)
    {
        var thresholds = FourBitCodebook.Thresholds(type);
        // Block of 16 (or 8) with absmax exactly 1, so scaled value == stored value.
        var onMidpoint = new[] { 1f }.Concat(thresholds).ToArray();
        var above = new[] { 1f }.Concat(thresholds.Select(m => MathF.BitIncrement(m))).ToArray();
        var codesOn = Codes(Quantize(onMidpoint, type, useTorchOps));
        var codesAbove = Codes(Quantize(above, type, useTorchOps));
        var values = FourBitCodebook.Values(type);
        for (int i = 0; i < thresholds.Length; i++)
        {
            float lower = values[codesOn[i + 1]], upper = values[codesAbove[i + 1]];
            Assert.True(lower < thresholds[i] && thresholds[i] < upper, $"threshold {i} ({thresholds[i]:R}): on -> {lower}, above -> {upper}");
            // The neighbours whose midpoint it is: the threshold is the largest float not above their exact midpoint.
            double exactMidpoint = ((double)lower + upper) / 2;
            Assert.True(thresholds[i] <= exactMidpoint && MathF.BitIncrement(thresholds[i]) > exactMidpoint, $"threshold {i}");
        }
    }

    [Fact]
    public void Fp4_is_sign_magnitude_with_signed_zero()
    {
        var codes = Codes(Quantize([1f, -1f, 0f, -1e-4f, 1e-4f, -0.5f, 0.25f, -0.0625f / 12f], FourBitType.Fp4));
        Assert.Equal(new byte[] { 0b0011, 0b1011, 0b0000, 0b1000, 0b0000, 0b1101, 0b0111, 0b1001 }, codes);
    }

    [Fact]
    public void Nf4_round_trip_error_on_normal_data_is_within_half_a_code_gap()
    {
        var data = Normal(64 * 256, seed: 1);
        var q = FourBitWeight.Quantize(tensor(data, [256, 64]), FourBitType.Nf4);
        var back = Floats(q.Dequantize(ScalarType.Float32));
        var absmax = Floats(((PlainScales)q.Scales).Absmax);
        // Largest NF4 gap is 1 - 0.6961928 between the two lowest codes: no value is further than half of it
        // (times its block's absmax) from its reconstruction.
        const float halfGap = (1f - 0.6961928009986877f) / 2f;
        double sumAbs = 0;
        for (int i = 0; i < data.Length; i++)
        {
            float err = MathF.Abs(data[i] - back[i]);
            Assert.True(err <= halfGap * absmax[i / 64] * (1 + 1e-6f), $"element {i}: error {err}");
            sumAbs += err;
        }
        // Mean absolute error on N(0,1), blocksize 64: about 0.07 (stated bound 0.08).
        Assert.InRange(sumAbs / data.Length, 0.0, 0.08);
    }

    public static TheoryData<FourBitType, int, int, bool> ReferenceCases => new()
    {
        { FourBitType.Nf4, 64 * 40, 64, false },
        { FourBitType.Fp4, 64 * 40, 64, false },
        { FourBitType.Nf4, 64 * 600 + 7, 64, true },   // partial last block, odd numel, 3 nested blocks
        { FourBitType.Fp4, 64 * 600, 64, true },
        { FourBitType.Nf4, 4096, 128, true },
        { FourBitType.Fp4, 999, 32, false },
        { FourBitType.Nf4, 998, 4, false },            // blocks narrower than a SIMD vector
        { FourBitType.Nf4, (1 << 22) + 64 * 3 + 1, 64, true }, // more than one chunk (CPU kernel and torch ops), odd numel

    };

    [Theory]
    [MemberData(nameof(ReferenceCases))]
    public void Cpu_kernel_and_torch_ops_equal_the_reference_bit_for_bit(FourBitType type, int n, int blockSize, bool doubleQuant)
    {
        var data = Normal(n, seed: n + blockSize, sigma: 0.02f);
        data[5] = 0f; data[n / 2] = -0f; // zeros of both signs
        var reference = FourBitReference.Quantize(data, [n], type, blockSize, doubleQuant);
        foreach (bool useTorchOps in new[] { false, true })
            AssertEqual(reference, FourBitWeight.Quantize(tensor(data), type, blockSize, doubleQuant,
                DoubleQuantizedScales.DefaultNestedBlockSize, null, useTorchOps), doubleQuant);
    }

    static void AssertEqual(FourBitWeight reference, FourBitWeight fast, bool doubleQuant)
    {
        Assert.Equal(Bytes(reference.Packed), Bytes(fast.Packed));
        if (doubleQuant)
        {
            var (f, r) = ((DoubleQuantizedScales)fast.Scales, (DoubleQuantizedScales)reference.Scales);
            Assert.Equal(BitConverter.SingleToInt32Bits(r.Offset), BitConverter.SingleToInt32Bits(f.Offset));
            Assert.Equal(Bytes(r.Codes), Bytes(f.Codes));
            AssertBitsEqual(Floats(r.NestedAbsmax), Floats(f.NestedAbsmax), "nested absmax");
        }
        else
        {
            AssertBitsEqual(Floats(((PlainScales)reference.Scales).Absmax), Floats(((PlainScales)fast.Scales).Absmax), "absmax");
        }
        var expected = FourBitReference.Dequantize(reference);
        AssertBitsEqual(expected, Floats(fast.Dequantize(ScalarType.Float32, useTorchOps: false)), "dequantized (cpu kernel)");
        AssertBitsEqual(expected, Floats(fast.Dequantize(ScalarType.Float32, useTorchOps: true)), "dequantized (torch ops)");
    }

    [Fact]
    public void Bf16_weight_quantizes_like_its_fp32_upcast_and_remembers_its_dtype()
    {
        using var w = tensor(Normal(4096, seed: 3), [64, 64]).to(ScalarType.BFloat16);
        var q = FourBitWeight.Quantize(w, FourBitType.Nf4, doubleQuant: true);
        var reference = FourBitReference.Quantize(Floats(w), [64, 64], FourBitType.Nf4, doubleQuant: true);
        Assert.Equal(Bytes(reference.Packed), Bytes(q.Packed));
        Assert.Equal(ScalarType.BFloat16, q.DType);
        Assert.Equal(ScalarType.BFloat16, q.Dequantize().dtype);
        Assert.Equal(new long[] { 64, 64 }, q.Dequantize().shape);
    }

    [Fact]
    public void Double_quantization_stores_4_127_bits_per_weight_at_64_and_256()
    {
        using var w = tensor(Normal(1024 * 1024, seed: 4), [1024, 1024]);
        var q = FourBitWeight.Quantize(w, FourBitType.Nf4, doubleQuant: true);
        double bits = 8.0 * q.StorageBytes / q.Numel;
        Assert.InRange(bits, 4.127 - 0.001, 4.127 + 0.001);
        Assert.Equal(QuantSizes.FourBitBytes(q.Numel, 64, doubleQuant: true), q.StorageBytes);
        Assert.Equal(4.5, 8.0 * FourBitWeight.Quantize(w, FourBitType.Nf4).StorageBytes / q.Numel, 3);
        Assert.Equal("nf4-dq", q.FormatName);

        // The double-quantized scales stay close to the fp32 ones (within half a step of the 8-bit map).
        var plain = Floats(FourBitWeight.Quantize(w, FourBitType.Nf4).Scales.Dequantize());
        var dq = Floats(q.Scales.Dequantize());
        for (int i = 0; i < plain.Length; i++)
            Assert.True(MathF.Abs(plain[i] - dq[i]) < 0.01f * plain[i], $"scale {i}: {dq[i]} vs {plain[i]}");
    }

    /// <summary>One block holding all of <paramref name="data"/> (its length a power of two).</summary>
    static FourBitWeight Quantize(float[] data, FourBitType type, bool useTorchOps = false) =>
        FourBitWeight.Quantize(tensor(data), type, data.Length, false, DoubleQuantizedScales.DefaultNestedBlockSize, null, useTorchOps);

    static byte[] Codes(FourBitWeight q) =>
        Bytes(q.Packed).SelectMany(b => new[] { (byte)(b >> 4), (byte)(b & 0xF) }).Take((int)q.Numel).ToArray();
}
