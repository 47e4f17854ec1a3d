using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>Unquantized weights kept as a frozen buffer in <see cref="DType"/>; null ("none") keeps the dtype the checkpoint stores.</summary>
public sealed record DenseFormat : BaseFormat
{
    public static readonly BaseFormatKind Kind = new DenseKind();

    public DenseFormat(ScalarType? DType)
    {
        if (DType is not (null or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32))
            throw new ArgumentException($"a dense base format is bf16, fp16 or fp32 (or none), not {DType}");
        this.DType = DType;
    }

    public ScalarType? DType { get; }

    public override string ToString() => DType switch
    {
        null => "none",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        _ => "fp32",
    };

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        new DenseFrozenLinear(weight.to(DType ?? weight.dtype, copy: true), computeDType);

    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        rows * cols * (DType ?? sourceDType) switch
        {
            ScalarType.Float32 => 4,
            ScalarType.BFloat16 or ScalarType.Float16 => 2,
            ScalarType.Float64 => 8,
            var other => throw new ArgumentException($"no dense size for dtype {other}"),
        };

    sealed class DenseKind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["none", "bf16", "fp16", "fp32"];
        public override string Syntax => "none|bf16|fp16|fp32";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            if (options.Count > 0)
                throw new FormatException($"unknown base format '{text}': {name} takes no options; use {BaseFormats.Syntax}");
            return new DenseFormat(name switch
            {
                "bf16" => ScalarType.BFloat16,
                "fp16" => ScalarType.Float16,
                "fp32" => ScalarType.Float32,
                _ => null,
            });
        }
    }
}
