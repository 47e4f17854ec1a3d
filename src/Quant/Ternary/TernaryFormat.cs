using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// BitNet b1.58 (Ma et al. 2024): weights in {-1, 0, +1} with one absmean scale per matrix, packed 2 bits a weight
/// in Hugging Face's BitNet layout (<see cref="TernaryWeight"/>), activations quantized to 8 bits per token inside
/// the linear (<see cref="TernaryActivations"/>), and a product that only adds and subtracts
/// (<see cref="TernaryMatMul"/>): transformers' AutoBitLinear. Spelling <c>ternary</c>, no options. Stored under
/// the BitNet checkpoint keys (<see cref="BitNetTernaryLayout"/>), which is also how native BitNet models load.
/// Applied after training to a model not trained for it, it destroys the model (docs/QUANTIZATION.md shows how
/// much); the ways that work are a native BitNet checkpoint or quantization-aware fine-tuning.
/// </summary>
public sealed record TernaryFormat : BaseFormat
{
    public const string Name = "ternary";

    public static readonly BaseFormatKind Kind = new TernaryKind();

    public override string ToString() => Name;

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        new TernaryLinear(TernaryWeight.Quantize(weight, name), computeDType, kernels);

    /// <summary>2 bits a weight (four rows to a byte) plus one bf16 scale.</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        QuantInputChecks.CeilDiv(rows, 4) * cols + 2;

    public override CheckpointLayout Layout => BitNetTernaryLayout.Instance;

    /// <summary>The weight's round trip and BitNet's 8-bit activations.</summary>
    public override IFakeQuantization FakeQuantization => TernaryFakeQuantization.Instance;

    sealed class TernaryKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => [Name];
        public override string Syntax => Name;

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text) =>
            options.Count == 0 ? new TernaryFormat()
            : throw new FormatException($"unknown base format '{text}': ternary takes no options; use {BaseFormats.Syntax}");
    }
}
