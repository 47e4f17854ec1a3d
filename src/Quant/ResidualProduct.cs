using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// residual + x @ W^T for a frozen weight W as one GEMM: BLAS's GEMM is C = alpha·A·B + beta·C, so with C the
/// residual and alpha = beta = 1 (<c>torch.addmm</c>) the add happens in the GEMM's epilogue, where cuBLAS forms
/// the sum in fp32 from the fp32 accumulator and rounds once, instead of rounding the product to the compute dtype,
/// reading it back and rounding the sum again. Why: a decoder layer's output is h + down(gated); on a 7B QLoRA step
/// on an H200 the separate add was ~12 µs and a launch gap per layer and forward pass next to the down projection's
/// ~230 µs GEMM (issue 13), and the epilogue's add costs almost nothing. The value may differ from the two-op
/// path's by one rounding step of the compute dtype (bf16: it is the better-rounded one); in fp32 only by fp32 rounding.
/// Only without an autograd graph (a checkpointed forward, a kept record, inference): under autograd the frozen
/// product stays the custom function that keeps no dense weight for backward (<see cref="FrozenMatMul"/>); and only
/// for a weight that is dequantized for a plain GEMM (not one computing its own product, <see cref="IQuantizedMatMul"/>),
/// with the residual in the compute dtype and of the product's shape (addmm neither promotes nor broadcasts).
/// </summary>
public static class ResidualProduct
{
    /// <summary>Whether residual + x @ W^T of <paramref name="weight"/> may be one GEMM (<see cref="Dense"/>).</summary>
    /// <param name="weight">the linear's <see cref="FrozenLinear.MatMulWeight"/> (null: its backward is not the frozen matmul's).</param>
    /// <param name="x">(..., in)</param>
    /// <param name="residual">(..., out)</param>
    public static bool Applies(IQuantizedWeight? weight, ScalarType computeDType, Tensor x, Tensor residual)
    {
        if (weight is null || weight is IQuantizedMatMul || KernelPath.NeedsGraph(x, residual)) return false;
        if (residual.dtype != computeDType || weight.Shape is not [var outF, var inF]) return false;
        long dims = x.dim();
        if (dims < 1 || residual.dim() != dims || x.size(-1) != inF || residual.size(-1) != outF) return false;
        for (int i = 0; i < dims - 1; i++)
            if (x.size(i) != residual.size(i)) return false;
        return true;
    }

    /// <summary>residual + x @ w^T for a dense w (out, in) in the compute dtype, x cast to it first: one addmm.</summary>
    /// <param name="x">(..., in)</param>
    /// <param name="w">(out, in) in the compute dtype.</param>
    /// <param name="residual">(..., out) in the compute dtype.</param>
    /// <returns>(..., out), a new tensor in the caller's dispose scope.</returns>
    public static Tensor Dense(Tensor x, Tensor w, Tensor residual, ScalarType computeDType)
    {
        // No dispose scope of its own (as FrozenMatMul.Product): the temporaries are disposed here, the sum lands in
        // the caller's scope.
        using var xc = x.dtype == computeDType ? x.alias() : x.to(computeDType);     // (..., in)
        using var rows = xc.reshape(-1, w.size(1));                                      // (N, in)
        using var c = residual.reshape(-1, w.size(0));                                   // (N, out)
        using var wt = w.t();                                                            // (in, out)
        using var sum = addmm(c, rows, wt, beta: 1, alpha: 1);                           // (N, out): c + rows @ wt, rounded once
        return sum.view(residual.shape);                                                 // (..., out)
    }
}
