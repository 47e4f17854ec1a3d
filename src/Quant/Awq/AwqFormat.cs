using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Awq;

/// <summary>
/// AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
/// arXiv:2306.00978): before group-wise asymmetric 4-bit quantization, each input channel j of the linears that share
/// an input is multiplied by a scale s_j searched from the activations (salient channels, those with large |x|, get
/// s > 1 and so finer steps), and 1/s is folded into the op that produces that input (an RMSNorm's weight or the
/// previous linear's output rows), so the float function is unchanged (<see cref="AwqSearch"/>); then each weight's
/// groups are clipped to the range that minimises its output error (optional) and rounded.
/// Spelling <c>awq4-g&lt;N&gt;[-noclip]</c> (AutoAWQ's w_bit 4, q_group_size N, zero_point true, GEMM layout;
/// <c>awq4</c> is one group per row). A group size must divide in_features. Needs calibration data; stored in
/// AutoAWQ's GEMM layout (<see cref="AwqLayout"/>).
/// </summary>
public sealed record AwqFormat : BaseFormat
{
    public const int Bits = 4;

    public static readonly BaseFormatKind Kind = new AwqKind();

    public AwqFormat(int GroupSize = 0, bool Clip = true)
    {
        if (GroupSize < 0) throw new ArgumentException($"an AWQ group size is positive (0 = per output row), not {GroupSize}");
        (this.GroupSize, this.Clip) = (GroupSize, Clip);
    }

    /// <summary>Inputs per group; 0 = one group per row (AutoAWQ's q_group_size -1).</summary>
    public int GroupSize { get; }

    /// <summary>Search each group's clipping range (AutoAWQ's apply_clip, default on).</summary>
    public bool Clip { get; }

    public int MaxQ => (1 << Bits) - 1;

    public override string ToString() => "awq4" + (GroupSize > 0 ? $"-g{GroupSize}" : "") + (Clip ? "" : "-noclip");

    public override bool NeedsCalibration => true;

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        throw new InvalidOperationException($"{this} needs calibration data: make it with `quantize --quantization {this} --calibration FILE` (or --calibration on the verb that loads it)");

    /// <summary>The group length for a weight with <paramref name="cols"/> inputs; checks that groups tile it.</summary>
    public long GroupLength(long cols, string? name = null)
    {
        if (GroupSize == 0) return cols;
        if (cols % GroupSize != 0)
            throw new ArgumentException($"cannot quantize {(name is null ? "a weight" : $"tensor '{name}'")} to {this}: group size {GroupSize} does not divide in_features {cols}; pick a divisor");
        return GroupSize;
    }

    /// <summary>qweight + qzeros (4-bit codes in int32 words) + fp16 scales.</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16)
    {
        long groups = GroupSize == 0 ? 1 : Math.Max(1, cols / GroupSize);
        return rows * cols / 2 + groups * rows / 2 + 2 * groups * rows;
    }

    public override CheckpointLayout Layout => AwqLayout.Instance;

    sealed class AwqKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["awq4"];
        public override string Syntax => "awq4[-g<N>][-noclip] (calibrated)";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            int group = 0;
            bool clip = true;
            foreach (var o in options)
            {
                if (o == "noclip") clip = false;
                else if (o.StartsWith('g')) group = Size(o, "g", text);
                else throw new FormatException($"unknown option '{o}' in base format '{text}'; {name} takes -g<groupsize> and/or -noclip");
            }
            return new AwqFormat(group, clip);
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
