using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>
/// A weight in GPTQ's stored form, the tensors of AutoGPTQ's QuantLinear (W^T orientation, in_features first):
/// <list type="bullet">
/// <item><c>qweight</c> int32 (ceil(in·bits/32), out): unsigned codes packed along in_features (<see cref="GptqPacking"/>)</item>
/// <item><c>qzeros</c> int32 (groups, ceil(out·bits/32)): zero points packed along out_features, stored minus
/// <see cref="ZeroOffset"/> (1 in the v1 "gptq" checkpoint format AutoGPTQ writes; 0 in GPTQModel's "gptq_v2")</item>
/// <item><c>scales</c> fp16 (groups, out)</item>
/// <item><c>g_idx</c> int32 (in): the group of each input column (i / group_size, or a permutation of it under act-order)</item>
/// </list>
/// Dequantized: W[o, i] = scales[g_idx[i], o] · (q[i, o] - (qzero[g_idx[i], o] + ZeroOffset)), in fp32.
/// </summary>
/// <param name="Spec">the format (bits, group size, act-order) the tensors hold.</param>
/// <param name="Shape">the dense shape [out, in].</param>
/// <param name="DType">dtype of the weight that was quantized.</param>
public sealed record GptqWeight(GptqFormat Spec, Tensor QWeight, Tensor QZeros, Tensor Scales, Tensor GIdx, int ZeroOffset,
    long[] Shape, ScalarType DType) : IQuantizedWeight
{
    /// <summary>v1 (AutoGPTQ, "checkpoint_format": "gptq") stores each zero point minus one.</summary>
    public const int V1ZeroOffset = 1;

    public long OutFeatures => Shape[0];
    public long InFeatures => Shape[1];

    /// <summary>
    /// Packs a solver's result: codes (out, in) in [0, 2^bits), fp32 scales (out, groups), zero points (out, groups)
    /// in [0, 2^bits), g_idx (in). Scales are stored in fp16 (AutoGPTQ's dtype) and zero points minus one (v1).
    /// </summary>
    public static GptqWeight FromCodes(GptqFormat spec, Tensor codes, Tensor scales, Tensor zeros, Tensor gIdx, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var qweight = GptqPacking.PackRows(codes.t(), spec.Bits);                                       // (words(in), out)
        // v1 stores z - 1; a zero point of 0 would wrap to all ones (the known v1 limitation; symmetric grids never have it).
        var stored = (zeros.to(ScalarType.Int64) - V1ZeroOffset).remainder(1L << spec.Bits);
        var qzeros = GptqPacking.PackColumns(stored.t(), spec.Bits);                                    // (groups, words(out))
        return new GptqWeight(spec, qweight.MoveToOuterDisposeScope(), qzeros.MoveToOuterDisposeScope(),
            scales.t().to(ScalarType.Float16).contiguous().MoveToOuterDisposeScope(), gIdx.to(ScalarType.Int32).MoveToOuterDisposeScope(),
            V1ZeroOffset, codes.shape, dtype);
    }

    /// <summary>The unsigned codes, (out, in) int32.</summary>
    public Tensor Codes()
    {
        using var scope = NewDisposeScope();
        return GptqPacking.UnpackRows(QWeight, Spec.Bits, InFeatures).t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The zero points as the dequantization uses them (stored + offset), (groups, out) int32.</summary>
    public Tensor ZeroPoints()
    {
        using var scope = NewDisposeScope();
        return (GptqPacking.UnpackColumns(QZeros, Spec.Bits, OutFeatures) + ZeroOffset).MoveToOuterDisposeScope();
    }

    /// <summary>The dense weight by torch ops on the storage device (the CPU reference is <see cref="GptqReference.Dequantize"/>).</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var q = GptqPacking.UnpackRows(QWeight, Spec.Bits, InFeatures);                   // (in, out)
        var g = GIdx.to(ScalarType.Int64);
        var zero = ZeroPoints().index_select(0, g);                                      // (in, out)
        var scale = Scales.to(ScalarType.Float32).index_select(0, g);                    // (in, out)
        var dense = (q - zero).to(ScalarType.Float32).mul_(scale);                      // (in, out) = W^T
        return dense.t().to(dtype).contiguous().MoveToOuterDisposeScope();
    }

    public Tensor Dequantize() => Dequantize(DType);

    public GptqWeight To(Device device) =>
        this with { QWeight = QWeight.to(device), QZeros = QZeros.to(device), Scales = Scales.to(device), GIdx = GIdx.to(device) };

    public long StorageBytes => 4 * (QWeight.numel() + QZeros.numel() + GIdx.numel()) + 2 * Scales.numel();

    public string FormatName => Spec.ToString();
}
