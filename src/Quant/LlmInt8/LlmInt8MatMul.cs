using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The forward product of LLM.int8() with outlier decomposition, as bitsandbytes' MatMul8bitLt.forward computes it
/// (functional.int8_vectorwise_quant of the activations, ops int8_mixed_scaled_mm, int8_scaled_mm, int8_mm_dequant;
/// default backend):
/// <code>
///   X (n, k) in the compute dtype, weight codes CB (m, k) with row absmax SCB (m)
///   outlier     = |X| >= threshold                      elementwise
///   columns     = the k indices where any row is an outlier
///   Xz          = X with the outlier elements set to 0
///   SCA[i]      = max_j |Xz[i, j]|                      per row (token), fp32
///   CA          = round(Xz * (127 / SCA)) as int8, with the outlier columns set to 0
///   Y           = fp32(CA @ CB^T) * (SCA[i] * SCB[o]) * 6.200124e-05      (6.200124e-05 = 1/127^2), to the compute dtype
///   Y          += X[:, columns] @ dequant(CB[:, columns])^T                the 16-bit part, in the compute dtype
/// </code>
/// bitsandbytes first casts X to fp16; here X is quantized from its compute-dtype value widened to fp32 (exact),
/// so bf16 activations beyond fp16's range stay finite. A row whose every element is an outlier (or zero) has
/// SCA 0 and contributes through the 16-bit part only. The int8 product runs the caller's <see cref="Int8MatMul"/>
/// path; every path gives the same int32, so the result does not depend on it.
/// </summary>
public static class LlmInt8MatMul
{
    /// <summary>bitsandbytes' 1/127^2 literal (int8_mm_dequant), as the fp32 the multiply uses.</summary>
    public const float InverseOf127Squared = 6.200124e-05f;

    /// <summary>y (..., m) in <paramref name="computeDType"/>; <paramref name="outlierColumns"/> = how many of the k
    /// input columns went through the 16-bit matmul.</summary>
    public static Tensor Forward(Tensor x, LlmInt8Weight w, ScalarType computeDType, Int8MatMul int8, out long outlierColumns)
    {
        using var scope = NewDisposeScope();
        long k = w.Shape[1], m = w.Shape[0];
        var leading = x.shape[..^1];
        var xc = x.to(computeDType).reshape(-1, k);                                       // (n, k)
        var xf = xc.to(ScalarType.Float32);
        var outlier = xf.abs().ge(w.Threshold);                                           // (n, k) bool
        var columns = outlier.any(0).nonzero().view(-1);                                  // (c) long
        outlierColumns = columns.shape[0];
        var xz = xf.masked_fill(outlier, 0f);
        var sca = xz.abs().amax([1]);                                                     // (n) fp32
        var ca = LlmInt8Weight.RowCodes(xz, sca);                                        // (n, k) int8
        if (outlierColumns > 0) ca.index_fill_(1, columns, 0);

        var acc = int8.Multiply(ca, w.Codes);                                              // (n, m) int32
        var y = (acc.to(ScalarType.Float32) * (sca.unsqueeze(1) * w.Scb.unsqueeze(0)) * InverseOf127Squared).to(computeDType);
        if (outlierColumns > 0)
        {
            var subA = xc.index_select(1, columns);                                       // (n, c)
            var subB = w.DequantizeColumns(columns, computeDType);                        // (m, c)
            y = y.addmm(subA, subB.t());
        }
        return y.reshape([.. leading, m]).MoveToOuterDisposeScope();
    }
}
