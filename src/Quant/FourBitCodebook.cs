namespace QLoraNet.Quant;

/// <summary>The two 4-bit data types of QLoRA / bitsandbytes.</summary>
public enum FourBitType
{
    /// <summary>NormalFloat4: 16 quantiles of N(0,1) scaled to [-1, 1] (Dettmers et al. 2023, section 3).</summary>
    Nf4,

    /// <summary>bitsandbytes' FP4: 1 sign, 2 exponent, 1 mantissa bit, scaled to [-1, 1].</summary>
    Fp4,
}

/// <summary>
/// The 4-bit codebooks exactly as bitsandbytes stores them in `weight.quant_map` (functional.get_4bit_type), and the
/// rule that maps a value already divided by its block absmax to a code. Both the reference and the tensor path read
/// their tables from here, so the rule is written down once.
/// </summary>
public static class FourBitCodebook
{
    /// <summary>NF4, index = code. Sorted, so code order is value order.</summary>
    static readonly float[] Nf4Values =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>
    /// FP4 magnitudes before normalisation, index = the 3 low bits of the code (bit pattern order, bias 2, with the
    /// subnormal 0b001 = 0.0625). bitsandbytes lists them as [0, 0.0625, 8, 12, 4, 6, 2, 3] and divides the whole
    /// map by 12 in fp32; bit 3 of the code is the sign.
    /// </summary>
    static readonly float[] Fp4RawMagnitudes = [0f, 0.0625f, 8f, 12f, 4f, 6f, 2f, 3f];

    static readonly float[] Fp4Values = BuildFp4Values();

    /// <summary>
    /// NF4 thresholds (15, ascending), see <see cref="Midpoints"/>. bitsandbytes' CUDA dQuantizeNF4 pivots (decimal
    /// literals) and its torch backend's fp32 sums are the same numbers up to one ulp; where the exact midpoint falls
    /// between two floats they sometimes take the upper one, giving that single float the lower code.
    /// </summary>
    static readonly float[] Nf4Midpoints = Midpoints(Nf4Values);

    /// <summary>FP4 magnitudes in ascending order and the 3-bit code of each.</summary>
    static readonly (float[] Sorted, byte[] Codes) Fp4Magnitudes = SortFp4Magnitudes();

    /// <summary>
    /// FP4 magnitude thresholds (7), defined like the NF4 ones. bitsandbytes' CUDA dQuantizeFP4 hard-codes shortened
    /// decimals (e.g. 0.583333f for 0.58333333), so values within a few ulp of those pivots may code differently there.
    /// </summary>
    static readonly float[] Fp4MagnitudeMidpoints = Midpoints(Fp4Magnitudes.Sorted);

    /// <summary>The 16 code values (fp32), index = 4-bit code; a copy.</summary>
    public static float[] Values(FourBitType type) => (type == FourBitType.Nf4 ? Nf4Values : Fp4Values).ToArray();

    /// <summary>The name bitsandbytes uses in `quant_type` and in the `quant_state.bitsandbytes__{name}` key.</summary>
    public static string Name(FourBitType type) => type == FourBitType.Nf4 ? "nf4" : "fp4";

    /// <summary>The thresholds the encoder compares against (ascending): all 15 for NF4, the 7 magnitude ones for FP4.</summary>
    public static float[] Thresholds(FourBitType type) =>
        (type == FourBitType.Nf4 ? Nf4Midpoints : Fp4MagnitudeMidpoints).ToArray();

    /// <summary>FP4 only: the 3-bit code of the i-th smallest magnitude.</summary>
    public static byte[] Fp4MagnitudeCodes() => Fp4Magnitudes.Codes.ToArray();

    /// <summary>
    /// The code of one value x in [-1, 1] (already scaled by 1/absmax). NF4: the number of thresholds strictly below x,
    /// i.e. the nearest code with a value exactly on a midpoint going to the lower code (bitsandbytes' torch backend:
    /// bucketize with right=False). FP4: sign bit from x &lt; 0 and the nearest magnitude, ties to the smaller one
    /// (bitsandbytes' CUDA dQuantizeFP4).
    /// </summary>
    public static byte Encode(FourBitType type, float x)
    {
        if (type == FourBitType.Nf4)
            return (byte)CountBelow(Nf4Midpoints, x);
        byte sign = x < 0 ? (byte)0b1000 : (byte)0;
        return (byte)(sign | Fp4Magnitudes.Codes[CountBelow(Fp4MagnitudeMidpoints, MathF.Abs(x))]);
    }

    static int CountBelow(float[] thresholds, float x)
    {
        int n = 0;
        foreach (var t in thresholds)
            if (x > t) n++;
        return n;
    }

    static float[] BuildFp4Values()
    {
        var v = new float[16];
        for (int code = 0; code < 16; code++)
        {
            float magnitude = Fp4RawMagnitudes[code & 0b111] / 12f;
            v[code] = (code & 0b1000) != 0 ? -magnitude : magnitude; // code 8 is -0.0, as in bitsandbytes' map
        }
        return v;
    }

    static (float[], byte[]) SortFp4Magnitudes()
    {
        var codes = Enumerable.Range(0, 8).Select(c => (byte)c).OrderBy(c => Fp4RawMagnitudes[c]).ToArray();
        return (codes.Select(c => Fp4RawMagnitudes[c] / 12f).ToArray(), codes);
    }

    /// <summary>
    /// Thresholds between neighbouring codes: the largest fp32 not above their exact midpoint (exact in double).
    /// Then "x &gt; threshold" holds exactly when x is nearer to the upper code, and an x exactly on the midpoint
    /// takes the lower code: nearest-code rounding with no rounding error of its own.
    /// </summary>
    internal static float[] Midpoints(float[] sorted) =>
        Enumerable.Range(0, sorted.Length - 1).Select(i => FloorToFloat(((double)sorted[i] + sorted[i + 1]) / 2)).ToArray();

    static float FloorToFloat(double exact)
    {
        float f = (float)exact;
        return f > exact ? MathF.BitDecrement(f) : f;
    }
}
