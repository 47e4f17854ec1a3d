using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// NF4/FP4 blockwise (bitsandbytes' quantize_4bit; QLoRA, Dettmers et al. 2023), optionally with double-quantized
/// scales. Spelling <c>nf4|fp4[-b&lt;N&gt;][-dq[&lt;M&gt;]]</c>. The block size is a power of two in [16, 4096]: bitsandbytes'
/// range, and at least the 8 weights one 32-bit word of packed codes holds, which the fused CUDA kernel needs
/// (checked here, once, instead of falling back silently at run time). Stored in checkpoints under bitsandbytes'
/// keys (<see cref="BitsAndBytesFourBitLayout"/>).
/// </summary>
public sealed record FourBitFormat : BaseFormat
{
    public const int MinBlockSize = 16, MaxBlockSize = 4096, MaxNestedBlockSize = 4096;

    public static readonly BaseFormatKind Kind = new FourBitKind();

    public FourBitFormat(FourBitType Type, int BlockSize = FourBitWeight.DefaultBlockSize, bool DoubleQuant = false,
        int NestedBlockSize = DoubleQuantizedScales.DefaultNestedBlockSize)
    {
        if (PowerOfTwoProblem(BlockSize, MinBlockSize, MaxBlockSize) is { } b)
            throw new ArgumentException($"{FourBitCodebook.Name(Type)} blocksize {b}");
        if (PowerOfTwoProblem(NestedBlockSize, 2, MaxNestedBlockSize) is { } n)
            throw new ArgumentException($"{FourBitCodebook.Name(Type)} nested blocksize {n}");
        (this.Type, this.BlockSize, this.DoubleQuant, this.NestedBlockSize) = (Type, BlockSize, DoubleQuant, NestedBlockSize);
    }

    public FourBitType Type { get; }
    public int BlockSize { get; }
    public bool DoubleQuant { get; }
    public int NestedBlockSize { get; }

    static string? PowerOfTwoProblem(int size, int min, int max) => BaseFormatKind.PowerOfTwoProblem(size, min, max);

    public override string ToString() => Spell(Type, BlockSize, DoubleQuant, NestedBlockSize);

    /// <summary>The canonical spelling of these parameters (also for weights quantized outside the format's range, e.g. in tests).</summary>
    public static string Spell(FourBitType type, int blockSize, bool doubleQuant, int nestedBlockSize) =>
        FourBitCodebook.Name(type)
        + (blockSize == FourBitWeight.DefaultBlockSize ? "" : $"-b{blockSize}")
        + (doubleQuant ? "-dq" : "")
        + (doubleQuant && nestedBlockSize != DoubleQuantizedScales.DefaultNestedBlockSize ? $"{nestedBlockSize}" : "");

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        new FourBitLinear(FourBitWeight.Quantize(weight, Type, BlockSize, DoubleQuant, NestedBlockSize, name), computeDType, kernels);

    /// <summary>The weight quantized in this format, on its own device.</summary>
    public FourBitWeight Quantize(Tensor weight, string? name = null) =>
        FourBitWeight.Quantize(weight, Type, BlockSize, DoubleQuant, NestedBlockSize, name);

    /// <summary>ceil(n/2) packed bytes + per block 4 bytes, or 1 byte plus 4 per nested block and a 4-byte offset.</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        QuantSizes.FourBitBytes(rows * cols, BlockSize, DoubleQuant, NestedBlockSize);

    public override CheckpointLayout Layout => BitsAndBytesFourBitLayout.Instance;

    sealed class FourBitKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["nf4", "fp4"];
        public override string Syntax => "nf4|fp4[-b<N>][-dq]";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            var type = name == "fp4" ? FourBitType.Fp4 : FourBitType.Nf4;
            int block = FourBitWeight.DefaultBlockSize, nested = DoubleQuantizedScales.DefaultNestedBlockSize;
            bool dq = false;
            foreach (var o in options)
            {
                if (o == "dq") dq = true;
                else if (o.StartsWith("dq")) (dq, nested) = (true, Size(o, "dq", text));
                else if (o.StartsWith('b')) block = Size(o, "b", text);
                else throw new FormatException($"unknown option '{o}' in base format '{text}'; {name} takes -b<blocksize> and/or -dq");
            }
            if (PowerOfTwoProblem(block, MinBlockSize, MaxBlockSize) is { } b)
                throw new FormatException($"base format '{text}': blocksize {b}");
            if (PowerOfTwoProblem(nested, 2, MaxNestedBlockSize) is { } n)
                throw new FormatException($"base format '{text}': nested blocksize {n}");
            return new FourBitFormat(type, block, dq, nested);
        }

        public override IReadOnlyList<string> StructuredKeys => ["double_quant", "blocksize"];

        public override string? StructuredOption(string key, string value) => key switch
        {
            "double_quant" when bool.TryParse(value, out bool dq) => dq ? "dq" : null,
            "double_quant" => throw new FormatException($"must be true or false; got '{value}'"),
            "blocksize" when int.TryParse(value, out int size) =>
                PowerOfTwoProblem(size, MinBlockSize, MaxBlockSize) is { } problem ? throw new FormatException(problem)
                : size == FourBitWeight.DefaultBlockSize ? null : $"b{size}",
            "blocksize" => throw new FormatException($"must be an integer; got '{value}'"),
            _ => base.StructuredOption(key, value),
        };
    }
}
