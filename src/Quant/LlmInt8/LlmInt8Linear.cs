using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen bias-free linear in LLM.int8() (<see cref="LlmInt8Format"/>): int8 codes and fp32 row absmax (SCB) are
/// buffers; forward is the mixed int8/16-bit product (<see cref="LlmInt8MatMul"/>) inside <see cref="FrozenMatMul"/>,
/// whose backward goes to the input through the dequantized weight (bitsandbytes' MatMul8bitLt.backward: grad_A =
/// grad_output @ CB * SCB / 127). It counts the outlier columns it sees (<see cref="Outliers"/>), the statistic the
/// LLM.int8() paper reports per layer.
/// </summary>
public sealed class LlmInt8Linear : StoredWeightLinear<LlmInt8Weight>
{
    // Buffers (field names are the buffer names).
    Tensor weight;            // int8 (out, in): bitsandbytes' CB
    Tensor SCB;               // fp32 (out)

    readonly long[] shape;
    readonly ScalarType sourceDType;
    readonly float threshold;
    readonly KernelSelection kernels;

    public LlmInt8Linear(LlmInt8Weight stored, ScalarType computeDType, KernelSelection? kernels = null, string name = "LlmInt8Linear")
        : base(name, stored.Shape[1], stored.Shape[0], computeDType)
    {
        this.kernels = kernels ?? KernelSelection.Portable;
        shape = stored.Shape;
        sourceDType = stored.DType;
        threshold = stored.Threshold;
        weight = stored.Codes.DetachFromDisposeScope();   // the module owns its buffers from here
        SCB = stored.Scb.DetachFromDisposeScope();
        AdoptDeviceOf(weight);
        RegisterComponents();
    }

    public override LlmInt8Weight Stored => new(weight, SCB, shape, sourceDType, threshold);

    /// <summary>Outlier columns seen so far, over all forwards.</summary>
    public OutlierStatistics Outliers { get; } = new();

    /// <summary>The mixed int8/16-bit product over the stored weight; forward is the default frozen matmul over it.</summary>
    public override IQuantizedWeight MatMulWeight => new Mixed(Stored, kernels.Int8MatMulFor(weight.device), Outliers);

    /// <summary>The stored weight as the frozen matmul sees it: its own forward product, dequantized for backward.</summary>
    sealed record Mixed(LlmInt8Weight Weight, Int8MatMul Int8, OutlierStatistics Outliers) : IQuantizedMatMul
    {
        public long[] Shape => Weight.Shape;
        public string FormatName => Weight.FormatName;
        public long StorageBytes => Weight.StorageBytes;
        public Tensor Dequantize(ScalarType dtype) => Weight.Dequantize(dtype);

        public Tensor MatMul(Tensor x, ScalarType computeDType)
        {
            var y = LlmInt8MatMul.Forward(x, Weight, computeDType, Int8, out long columns);
            Outliers.Add(columns, Weight.Shape[1]);
            return y;
        }
    }
}

/// <summary>
/// How many input columns an LLM.int8() linear has sent through its 16-bit part: per forward, the columns with any
/// |x| >= threshold, summed over forwards. Kept by the module (no process-wide state); read by `eval`.
/// </summary>
public sealed class OutlierStatistics
{
    /// <summary>Forward calls counted.</summary>
    public long Forwards { get; private set; }

    /// <summary>Input columns seen, summed over forwards (forwards x in_features).</summary>
    public long Columns { get; private set; }

    /// <summary>Outlier columns, summed over forwards.</summary>
    public long OutlierColumns { get; private set; }

    /// <summary>Mean fraction of a forward's input columns that were outliers (0 before any forward).</summary>
    public double Fraction => Columns == 0 ? 0 : (double)OutlierColumns / Columns;

    public void Add(long outlierColumns, long columns)
    {
        Forwards++;
        Columns += columns;
        OutlierColumns += outlierColumns;
    }
}
