using System.Text.RegularExpressions;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// HQQ, half-quadratic quantization (Badri &amp; Shaji 2023, mobiusml/hqq): asymmetric <see cref="Bits"/>-bit codes per
/// group of <see cref="GroupSize"/> consecutive weights of the flattened weight (hqq's axis=1, the default of its
/// transformers integration), with the zero point found by hqq's proximal half-quadratic solver under an lp (p = 0.7)
/// error and no calibration data (<see cref="HqqSolver"/>), codes bit-packed as hqq packs them
/// (<see cref="HqqBitPack"/>), scale and zero point in fp16. Spelling <c>hqq2|hqq3|hqq4|hqq8[-g&lt;N&gt;]</c>,
/// group 64 by default, a multiple of 8 (hqq's own rule) that divides the weight's element count. Stored under
/// hqq's own state-dict keys (<see cref="HqqLayout"/>).
/// </summary>
public sealed partial record HqqFormat : BaseFormat
{
    public const int DefaultGroupSize = 64, MaxGroupSize = 8192;

    /// <summary>The bit widths hqq bit-packs (its 1, 5, 6 and 1.58 are left out: 5/6 are stored as 8, 1 is HQQ+ territory).</summary>
    public static readonly IReadOnlyList<int> SupportedBits = [2, 3, 4, 8];

    public static readonly BaseFormatKind Kind = new HqqKind();

    public HqqFormat(int Bits, int GroupSize = DefaultGroupSize)
    {
        if (BitsProblem(Bits) is { } b) throw new ArgumentException(b);
        if (GroupProblem(GroupSize) is { } g) throw new ArgumentException($"hqq group size {g}");
        (this.Bits, this.GroupSize) = (Bits, GroupSize);
    }

    public int Bits { get; }
    public int GroupSize { get; }

    static string? BitsProblem(int bits) =>
        SupportedBits.Contains(bits) ? null : $"hqq{bits}: {bits} bits are not supported; hqq takes 2, 3, 4 or 8 bits";

    /// <summary>hqq's rule (hqq_base_quant_config): a multiple of 8; here also at most <see cref="MaxGroupSize"/>.</summary>
    public static string? GroupProblem(int size) =>
        size >= 8 && size <= MaxGroupSize && size % 8 == 0 ? null : $"must be a multiple of 8 in [8, {MaxGroupSize}]; got {size}";

    public override string ToString() => $"hqq{Bits}" + (GroupSize == DefaultGroupSize ? "" : $"-g{GroupSize}");

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        new HqqLinear(HqqWeight.Quantize(weight, this, name), computeDType);

    /// <summary>Packed codes (3-bit: ten to an int32 word) plus an fp16 scale and zero point per group.</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16)
    {
        long groups = QuantInputChecks.CeilDiv(rows * cols, GroupSize);
        return HqqBitPack.PackedBytes(Bits, groups, GroupSize) + 2 * 2 * groups;
    }

    public override CheckpointLayout Layout => HqqLayout.Instance;

    sealed partial class HqqKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => SupportedBits.Select(b => $"hqq{b}").ToList();
        public override string Syntax => "hqq2|hqq3|hqq4|hqq8[-g<N>]";

        /// <summary>Any hqq&lt;number&gt;, so that an unsupported width gets its own message.</summary>
        public override bool Reads(string name) => HqqName().IsMatch(name);

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            if (!int.TryParse(name[3..], out int bits))
                throw new FormatException($"base format '{text}': '{name}' is not a bit width; hqq takes 2, 3, 4 or 8 bits");
            if (BitsProblem(bits) is { } problem)
                throw new FormatException($"base format '{text}': {problem}");
            int group = DefaultGroupSize;
            foreach (var o in options)
            {
                if (!o.StartsWith('g') || !int.TryParse(o[1..], out group))
                    throw new FormatException($"unknown option '{o}' in base format '{text}'; {name} takes -g<groupsize>, e.g. {name}-g64");
                if (GroupProblem(group) is { } g) throw new FormatException($"base format '{text}': group size {g}");
            }
            return new HqqFormat(bits, group);
        }

        public override IReadOnlyList<string> StructuredKeys => ["group_size"];

        public override string? StructuredOption(string key, string value) => key switch
        {
            "group_size" when int.TryParse(value, out int size) =>
                GroupProblem(size) is { } problem ? throw new FormatException(problem) : size == DefaultGroupSize ? null : $"g{size}",
            "group_size" => throw new FormatException($"must be an integer (the hqq group size); got '{value}'"),
            _ => base.StructuredOption(key, value),
        };

        [GeneratedRegex("^hqq[0-9]+$")]
        private static partial Regex HqqName();
    }
}
