using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

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
/// q = round(r / s + z) with an integer zero point z; r ≈ s (q - z). Spelling
/// <c>int8|int4|int3[-tensor|-channel|-g&lt;N&gt;][-sym|-asym]</c>; plain "int4" is per channel, symmetric, in the YAML
/// config as on the command line. A group size must divide each weight's in_features (checked per weight).
/// </summary>
public sealed record LinearQuantFormat : BaseFormat
{
    public static readonly BaseFormatKind Kind = new LinearQuantKind();

    public LinearQuantFormat(int Bits, QuantGranularity Granularity = QuantGranularity.PerChannel, int GroupSize = 0, bool Symmetric = true)
    {
        if (Bits is not (3 or 4 or 8)) throw new ArgumentException($"linear quantization is int8, int4 or int3, not int{Bits}");
        if ((Granularity == QuantGranularity.PerGroup) != (GroupSize > 0))
            throw new ArgumentException($"a group size ({GroupSize}) goes with per-group granularity only ({Granularity})");
        (this.Bits, this.Granularity, this.GroupSize, this.Symmetric) = (Bits, Granularity, GroupSize, Symmetric);
    }

    public int Bits { get; }
    public QuantGranularity Granularity { get; }
    public int GroupSize { get; }
    public bool Symmetric { get; }

    /// <summary>Smallest code: -2^(Bits-1) (-128 for int8, -8 for int4, -4 for int3).</summary>
    public int QMin => -(1 << (Bits - 1));

    /// <summary>Largest code: 2^(Bits-1) - 1 (127 for int8, 7 for int4).</summary>
    public int QMax => (1 << (Bits - 1)) - 1;

    public override string ToString() =>
        $"int{Bits}"
        + Granularity switch { QuantGranularity.PerTensor => "-tensor", QuantGranularity.PerGroup => $"-g{GroupSize}", _ => "" }
        + (Symmetric ? "" : "-asym");

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        new LinearQuantLinear(LinearQuantWeight.Quantize(weight, this, name), computeDType);

    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        QuantSizes.LinearQuantBytes(this, rows, cols);

    sealed class LinearQuantKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["int8", "int4", "int3"];
        public override string Syntax => "int8|int4|int3[-tensor|-channel|-g<N>][-asym]";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            var (granularity, group, symmetric) = (QuantGranularity.PerChannel, 0, true);
            foreach (var o in options)
                (granularity, group, symmetric) = o switch
                {
                    "tensor" => (QuantGranularity.PerTensor, 0, symmetric),
                    "channel" => (QuantGranularity.PerChannel, 0, symmetric),
                    "sym" => (granularity, group, true),
                    "asym" => (granularity, group, false),
                    _ when o.StartsWith('g') => (QuantGranularity.PerGroup, Size(o, "g", text), symmetric),
                    _ => throw new FormatException($"unknown option '{o}' in base format '{text}'; {name} takes -tensor, -channel, -g<groupsize>, -sym or -asym"),
                };
            return new LinearQuantFormat(int.Parse(name[3..]), granularity, group, symmetric);
        }

        public override IReadOnlyList<string> StructuredKeys => ["blocksize"];

        public override string? StructuredOption(string key, string value) => key switch
        {
            "blocksize" when int.TryParse(value, out int size) && size > 0 => $"g{size}",
            "blocksize" => throw new FormatException($"must be a positive integer (the group size); got '{value}'"),
            _ => base.StructuredOption(key, value),
        };
    }
}
