using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Which stored format a frozen base weight uses: the one place that names formats. Parsed from the strings the
/// CLI and configs use; <see cref="ToString"/> gives the canonical spelling back (also each module's FormatName).
/// <code>
///   none | bf16 | fp16 | fp32                      dense (none keeps the checkpoint dtype)
///   nf4 | fp4 [-b&lt;N&gt;] [-dq[&lt;M&gt;]]                 4-bit blockwise, blocksize N (64), double-quantized scales (M = 256)
///   int8 | int4 [-tensor|-channel|-g&lt;N&gt;] [-sym|-asym]   linear quantization (default: per channel, symmetric)
/// </code>
/// </summary>
public abstract record QuantSpec
{
    public static QuantSpec Parse(string text)
    {
        var tokens = text.Trim().ToLowerInvariant().Split('-');
        QuantSpec? spec = tokens[0] switch
        {
            "none" => new DenseSpec(null),
            "bf16" => new DenseSpec(ScalarType.BFloat16),
            "fp16" => new DenseSpec(ScalarType.Float16),
            "fp32" => new DenseSpec(ScalarType.Float32),
            "nf4" => FourBitSpec.FromOptions(FourBitType.Nf4, tokens[1..]),
            "fp4" => FourBitSpec.FromOptions(FourBitType.Fp4, tokens[1..]),
            "int8" => LinearQuantSpec.FromOptions(8, tokens[1..]),
            "int4" => LinearQuantSpec.FromOptions(4, tokens[1..]),
            _ => null,
        };
        if (spec is null || (spec is DenseSpec && tokens.Length > 1))
            throw new FormatException($"unknown base format '{text}'; use none, bf16, fp16, fp32, nf4[-dq][-b64], fp4[-dq][-b64], int8|int4[-tensor|-channel|-g64][-asym]");
        return spec;
    }

    internal static int ParseSize(string token, string prefix, string text)
    {
        if (!int.TryParse(token[prefix.Length..], out int size) || size <= 0)
            throw new FormatException($"bad size '{token}' in base format '{text}'; write e.g. {prefix}64");
        return size;
    }
}

/// <summary>Unquantized weight kept as a buffer; DType null keeps the dtype it arrives in.</summary>
public sealed record DenseSpec(ScalarType? DType) : QuantSpec
{
    public override string ToString() => DType switch
    {
        null => "none",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        ScalarType.Float32 => "fp32",
        var other => other.ToString()!.ToLowerInvariant(),
    };
}

/// <summary>NF4/FP4 blockwise (bitsandbytes' quantize_4bit), optionally with double-quantized scales.</summary>
public sealed record FourBitSpec(FourBitType Type, int BlockSize = FourBitWeight.DefaultBlockSize, bool DoubleQuant = false,
    int NestedBlockSize = DoubleQuantizedScales.DefaultNestedBlockSize) : QuantSpec
{
    internal static FourBitSpec FromOptions(FourBitType type, string[] options)
    {
        var spec = new FourBitSpec(type);
        foreach (var o in options)
            spec = o switch
            {
                "dq" => spec with { DoubleQuant = true },
                _ when o.StartsWith("dq") => spec with { DoubleQuant = true, NestedBlockSize = ParseSize(o, "dq", string.Join('-', options)) },
                _ when o.StartsWith('b') => spec with { BlockSize = ParseSize(o, "b", string.Join('-', options)) },
                _ => throw new FormatException($"unknown option '{o}' for {FourBitCodebook.Name(type)}; use -b<blocksize> and/or -dq"),
            };
        return spec;
    }

    public override string ToString() =>
        FourBitCodebook.Name(Type)
        + (BlockSize == FourBitWeight.DefaultBlockSize ? "" : $"-b{BlockSize}")
        + (DoubleQuant ? "-dq" : "")
        + (DoubleQuant && NestedBlockSize != DoubleQuantizedScales.DefaultNestedBlockSize ? $"{NestedBlockSize}" : "");
}

/// <summary>How many weights share one scale (and zero point) in linear quantization.</summary>
public enum QuantGranularity
{
    /// <summary>One scale for the whole tensor.</summary>
    PerTensor,

    /// <summary>One scale per output channel (row of [out, in]).</summary>
    PerChannel,

    /// <summary>One scale per GroupSize consecutive weights of a row (along the input dimension).</summary>
    PerGroup,
}

/// <summary>
/// Linear (uniform) quantization to signed Bits-bit integers: symmetric q = round(r / s), or asymmetric
/// q = round(r / s + z) with an integer zero point z; r ≈ s (q - z).
/// </summary>
public sealed record LinearQuantSpec(int Bits, QuantGranularity Granularity = QuantGranularity.PerChannel, int GroupSize = 0,
    bool Symmetric = true) : QuantSpec
{
    /// <summary>Smallest code: -2^(Bits-1) (-128 for int8, -8 for int4).</summary>
    public int QMin => -(1 << (Bits - 1));

    /// <summary>Largest code: 2^(Bits-1) - 1 (127 for int8, 7 for int4).</summary>
    public int QMax => (1 << (Bits - 1)) - 1;

    internal static LinearQuantSpec FromOptions(int bits, string[] options)
    {
        var spec = new LinearQuantSpec(bits);
        foreach (var o in options)
            spec = o switch
            {
                "tensor" => spec with { Granularity = QuantGranularity.PerTensor, GroupSize = 0 },
                "channel" => spec with { Granularity = QuantGranularity.PerChannel, GroupSize = 0 },
                "sym" => spec with { Symmetric = true },
                "asym" => spec with { Symmetric = false },
                _ when o.StartsWith('g') => spec with { Granularity = QuantGranularity.PerGroup, GroupSize = ParseSize(o, "g", string.Join('-', options)) },
                _ => throw new FormatException($"unknown option '{o}' for int{bits}; use -tensor, -channel, -g<groupsize>, -sym or -asym"),
            };
        return spec;
    }

    public override string ToString() =>
        $"int{Bits}"
        + Granularity switch { QuantGranularity.PerTensor => "-tensor", QuantGranularity.PerGroup => $"-g{GroupSize}", _ => "" }
        + (Symmetric ? "" : "-asym");
}
