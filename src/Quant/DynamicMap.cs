using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// bitsandbytes' signed 8-bit dynamic map (functional.create_dynamic_map(signed=True, max_exponent_bits=7,
/// total_bits=8); Dettmers 2015, "8-Bit Approximations for Parallelism in Deep Learning"), the code of the second
/// quantization level in QLoRA's double quantization (`weight.nested_quant_map`).
/// For exponent e = 0..6 it holds the 2^e midpoints of linspace(0.1, 1, 2^e + 1) times ±10^(e-6), plus 0 and 1,
/// sorted. The linspace and the scaling run through libtorch in fp32 exactly as bitsandbytes does, so the table is
/// bit-identical to the one in a bitsandbytes checkpoint.
/// </summary>
public static class DynamicMap
{
    static readonly Lazy<float[]> Table = new(Build);
    static readonly Lazy<float[]> MidpointTable = new(() =>
    {
        return FourBitCodebook.Midpoints(Table.Value);
    });

    /// <summary>The 256 code values (ascending), index = 8-bit code; a copy.</summary>
    public static float[] Values() => Table.Value.ToArray();

    /// <summary>
    /// The 255 thresholds between neighbouring codes (ascending; a copy), defined as for the 4-bit codebooks
    /// (nearest code, exact ties to the lower). bitsandbytes compares with fp32-rounded midpoints instead; the two can
    /// differ only for a value within one ulp of a midpoint, and only in which of two adjacent codes it gets.
    /// </summary>
    public static float[] Thresholds() => MidpointTable.Value.ToArray();

    /// <summary>The code of one value in [-1, 1]: nearest entry, a value exactly on a midpoint takes the lower code.</summary>
    public static byte Encode(float x)
    {
        var t = MidpointTable.Value;
        int n = 0;
        foreach (var m in t)
            if (x > m) n++;
        return (byte)n;
    }

    static float[] Build()
    {
        const int maxExponentBits = 7;
        var data = new List<float>();
        using var scope = NewDisposeScope();
        for (int i = 0; i < maxExponentBits; i++)
        {
            long fractionItems = (1L << i) + 1; // signed: 2^(i + nonSignBits - maxExponentBits) + 1, nonSignBits = 7
            var boundaries = linspace(0.1, 1, fractionItems, ScalarType.Float32);
            var means = (boundaries[..^1] + boundaries[1..]) / 2.0;
            double scale = Math.Pow(10, -(maxExponentBits - 1) + i);
            data.AddRange((means * scale).data<float>().ToArray());
            data.AddRange((means * -scale).data<float>().ToArray());
        }
        data.Add(0f);
        data.Add(1f);
        if (data.Count != 256)
            throw new InvalidOperationException($"dynamic map has {data.Count} entries, expected 256");
        data.Sort();
        return data.ToArray();
    }
}
