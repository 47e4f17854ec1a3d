using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>
/// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers",
/// arXiv:2210.17323): each linear's weight is quantized column by column to unsigned <see cref="Bits"/>-bit codes on a
/// symmetric grid per output row and group of <see cref="GroupSize"/> inputs, and the rounding error of each column is
/// spread over the columns not yet quantized through the inverse Hessian of the layer's reconstruction loss,
/// H = 2 X X^T over calibration activations X (<see cref="GptqSolver"/>). <see cref="ActOrder"/> quantizes columns
/// in order of decreasing H_jj (AutoGPTQ's desc_act). Spelling <c>gptq&lt;bits&gt;[-g&lt;N&gt;][-act]</c> with bits 2, 3, 4 or 8:
/// <c>gptq4-g128</c> (AutoGPTQ's usual choice), <c>gptq4</c> per output row (group_size -1), <c>gptq4-g128-act</c>.
/// Symmetric only (AutoGPTQ's default sym=True): the v1 checkpoint format stores zero points minus one, so an
/// asymmetric zero point of 0 cannot be written (the off-by-one GPTQModel's v2 format fixed). A group size must divide
/// in_features. Needs calibration data; stored in AutoGPTQ's layout (<see cref="GptqLayout"/>).
/// </summary>
public sealed record GptqFormat : BaseFormat
{
    public static readonly BaseFormatKind Kind = new GptqKind();

    public GptqFormat(int Bits, int GroupSize = 0, bool ActOrder = false)
    {
        if (Bits is not (2 or 3 or 4 or 8)) throw new ArgumentException($"GPTQ quantizes to 2, 3, 4 or 8 bits, not {Bits}");
        if (GroupSize < 0) throw new ArgumentException($"a GPTQ group size is positive (0 = per output row), not {GroupSize}");
        (this.Bits, this.GroupSize, this.ActOrder) = (Bits, GroupSize, ActOrder);
    }

    public int Bits { get; }

    /// <summary>Inputs per group; 0 = one group per output row (AutoGPTQ's group_size -1).</summary>
    public int GroupSize { get; }

    /// <summary>Quantize columns in order of decreasing Hessian diagonal (desc_act); the groups then follow that order.</summary>
    public bool ActOrder { get; }

    /// <summary>The largest code, 2^bits - 1.</summary>
    public int MaxQ => (1 << Bits) - 1;

    /// <summary>AutoGPTQ's group_size: the group size, or -1 per output row.</summary>
    public int ConfigGroupSize => GroupSize == 0 ? -1 : GroupSize;

    public override string ToString() => $"gptq{Bits}" + (GroupSize > 0 ? $"-g{GroupSize}" : "") + (ActOrder ? "-act" : "");

    public override bool NeedsCalibration => true;

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        throw new InvalidOperationException($"{this} needs calibration data: make it with `quantize --quantization {this} --calibration FILE` (or --calibration on the verb that loads it)");

    /// <summary>Groups along in_features for a weight with <paramref name="cols"/> inputs; checks that they tile it.</summary>
    public int Groups(long cols, string? name = null)
    {
        if (GroupSize == 0) return 1;
        if (cols % GroupSize != 0)
            throw new ArgumentException($"cannot quantize {(name is null ? "a weight" : $"tensor '{name}'")} to {this}: group size {GroupSize} does not divide in_features {cols}; pick a divisor");
        return (int)(cols / GroupSize);
    }

    /// <summary>qweight + qzeros (packed int32) + fp16 scales + int32 g_idx, as the layout stores them.</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16)
    {
        long groups = GroupSize == 0 ? 1 : Math.Max(1, cols / GroupSize);
        return 4 * GptqPacking.Words(cols, Bits) * rows + 4 * groups * GptqPacking.Words(rows, Bits) + 2 * groups * rows + 4 * cols;
    }

    public override CheckpointLayout Layout => GptqLayout.Instance;

    sealed class GptqKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["gptq2", "gptq3", "gptq4", "gptq8"];
        public override string Syntax => "gptq2|gptq3|gptq4|gptq8[-g<N>][-act] (calibrated)";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            int group = 0;
            bool act = false;
            foreach (var o in options)
            {
                if (o is "act" or "desc_act") act = true;
                else if (o.StartsWith('g')) group = Size(o, "g", text);
                else throw new FormatException($"unknown option '{o}' in base format '{text}'; {name} takes -g<groupsize> and/or -act");
            }
            return new GptqFormat(int.Parse(name[4..]), group, act);
        }

        public override IReadOnlyList<string> StructuredKeys => ["blocksize"];

        public override string? StructuredOption(string key, string value) => key switch
        {
            "blocksize" when int.TryParse(value, out int size) && size > 0 => $"g{size}",
            "blocksize" when value == "-1" => null,
            "blocksize" => throw new FormatException($"must be a positive integer (the group size) or -1 (per row); got '{value}'"),
            _ => base.StructuredOption(key, value),
        };
    }
}
