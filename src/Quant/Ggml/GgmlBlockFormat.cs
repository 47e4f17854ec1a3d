using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Ggml;

/// <summary>The ggml block types a base format can be.</summary>
public enum GgmlBlockType
{
    /// <summary>32 4-bit codes and an fp16 scale per block (<see cref="Q4_0Blocks"/>).</summary>
    Q4_0,

    /// <summary>32 int8 codes and an fp16 scale per block (<see cref="Q8_0Blocks"/>).</summary>
    Q8_0,
}

/// <summary>
/// GGUF's block formats as base formats: <c>q4_0</c> (4.5 bits a weight) and <c>q8_0</c> (8.5 bits), quantized
/// exactly as `export --type q4_0 | q8_0` writes them into a GGUF file (llama.cpp's quantize_row_q4_0_ref /
/// quantize_row_q8_0_ref), so `eval --quantization q4_0` measures the weights llama.cpp will run and
/// `quantization.aware: q4_0` trains toward them. Rows (in_features) must be a multiple of 32; a weight whose rows
/// are not is an error naming it, unless the spelling ends in <c>-f16</c> (<c>q4_0-f16</c>): such weights are then
/// held in fp16, which is what `export` writes for them (GgufTypePolicy's fallback), so the model computes exactly
/// what the GGUF file holds. There is no checkpoint layout: a model is stored dense (or as GGUF) and quantized on load.
/// </summary>
public sealed record GgmlBlockFormat : BaseFormat
{
    public static readonly BaseFormatKind Kind = new GgmlBlockKind();

    public GgmlBlockFormat(GgmlBlockType Type, bool F16Fallback = false) => (this.Type, this.F16Fallback) = (Type, F16Fallback);

    public GgmlBlockType Type { get; }

    /// <summary>Weights whose rows are not whole blocks are held in fp16 (as GGUF export writes them) instead of refused.</summary>
    public bool F16Fallback { get; }

    /// <summary>True when a [rows, cols] weight is held in fp16 instead of blocks.</summary>
    public bool FallsBack(long cols) => F16Fallback && cols % BlockSize != 0;

    /// <summary>Weights per block (32 for both types).</summary>
    public int BlockSize => Type == GgmlBlockType.Q4_0 ? Q4_0Blocks.BlockSize : Q8_0Blocks.BlockSize;

    /// <summary>Bytes per block: the fp16 scale and the codes.</summary>
    public int BlockBytes => Type == GgmlBlockType.Q4_0 ? Q4_0Blocks.BlockBytes : Q8_0Blocks.BlockBytes;

    public override string ToString() => (Type == GgmlBlockType.Q4_0 ? "q4_0" : "q8_0") + (F16Fallback ? "-f16" : "");

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null)
    {
        if (weight.dim() == 2 && FallsBack(weight.shape[1]))
        {
            using var half = weight.detach().to(ScalarType.Float16);
            return new DenseFrozenLinear(half, computeDType);
        }
        return new GgmlBlockLinear(GgmlBlockWeight.Quantize(weight, this, name), computeDType);
    }

    /// <summary>Whole blocks of each row: 18 bytes per 32 weights for q4_0, 34 for q8_0 (2 a weight where fp16 is kept).</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        FallsBack(cols) ? rows * cols * 2 : rows * QuantInputChecks.CeilDiv(cols, BlockSize) * BlockBytes;

    sealed class GgmlBlockKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["q4_0", "q8_0"];
        public override string Syntax => "q4_0|q8_0[-f16] (GGUF)";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text) =>
            options.Count == 0 || options is ["f16"]
                ? new GgmlBlockFormat(name == "q4_0" ? GgmlBlockType.Q4_0 : GgmlBlockType.Q8_0, options.Count == 1)
                : throw new FormatException($"unknown option '{string.Join('-', options)}' in base format '{text}'; {name} takes only -f16 (keep weights whose rows are not whole 32-value blocks in fp16, as GGUF export does)");
    }
}
