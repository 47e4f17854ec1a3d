using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Kernels;

/// <summary>
/// The LoRA update added to the frozen base output, y = base + scaling * (h A^T) B^T (Hu et al. 2021, eq. 3), with
/// the up-projection, the scaling and the addition in one GEMM: addmm(base, down, B^T, beta: 1, alpha: scaling)
/// reads the base output in its epilogue, where the reference (<see cref="Reference"/>, LoraLinear's ops) runs a
/// GEMM, a multiply and an add, each a full pass over the (tokens, out) output. Rounding: the GEMM epilogue forms
/// scaling * acc + base in fp32 and rounds once; the reference rounds the product, the scaled product and the sum,
/// so the two differ by at most a rounding step of the output (bench kernel shows how often).
/// Drop-in: LoraLinear.forward's <c>up = linear(down, B); y = result + up.mul(Scaling).to(result.dtype)</c> is
/// <c>y = LoraPath.AddLowRank(result, h, A.to(dtype), B.to(dtype), Scaling)</c>.
/// </summary>
public static class LoraPath
{
    /// <param name="baseOutput">(..., out) the frozen layer's output, in the compute dtype.</param>
    /// <param name="h">(..., in) the adapter's input (after dropout), in the compute dtype.</param>
    /// <param name="a">(r, in) LoRA A in the compute dtype.</param>
    /// <param name="b">(out, r) LoRA B in the compute dtype.</param>
    /// <returns>(..., out) base + scaling * h A^T B^T.</returns>
    public static Tensor AddLowRank(Tensor baseOutput, Tensor h, Tensor a, Tensor b, double scaling)
    {
        using var scope = NewDisposeScope();
        var down = F.linear(h, a);                                                   // (..., r)
        return AddUp(baseOutput, down, b, scaling).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="AddLowRank"/> from the down projection already made: adapters reading one input make theirs as one
    /// GEMM and pass each its columns (Peft.SharedLoraDown), a strided view that the GEMM reads in place.
    /// </summary>
    /// <param name="baseOutput">(..., out) the frozen layer's output.</param>
    /// <param name="down">(..., r) or (N, r): h A^T in the compute dtype.</param>
    /// <param name="b">(out, r) LoRA B in the compute dtype.</param>
    /// <returns>(..., out) base + scaling * down B^T.</returns>
    public static Tensor AddUp(Tensor baseOutput, Tensor down, Tensor b, double scaling)
    {
        // addmm wants one dtype; a base whose output is in another (none of ours) takes the reference's casts.
        if (baseOutput.dtype != down.dtype) return ReferenceUp(baseOutput, down, b, scaling);
        using var scope = NewDisposeScope();
        long outF = b.size(0), r = b.size(1);                                        // one native call each; .shape allocates
        var y = torch.addmm(baseOutput.reshape(-1, outF), down.reshape(-1, r), b.t(), beta: 1, alpha: (float)scaling); // (N, out)
        return y.view_as(baseOutput).MoveToOuterDisposeScope();
    }

    /// <summary>LoraLinear's ops: base + (scaling * (h A^T) B^T), each rounded to the dtype.</summary>
    public static Tensor Reference(Tensor baseOutput, Tensor h, Tensor a, Tensor b, double scaling)
    {
        using var scope = NewDisposeScope();
        return ReferenceUp(baseOutput, F.linear(h, a), b, scaling).MoveToOuterDisposeScope();
    }

    /// <summary><see cref="Reference"/> from the down projection already made ((..., r) or (N, r)).</summary>
    static Tensor ReferenceUp(Tensor baseOutput, Tensor down, Tensor b, double scaling)
    {
        using var scope = NewDisposeScope();
        var up = F.linear(down, b).view_as(baseOutput);                              // (..., out)
        return (baseOutput + up.mul(scaling).to(baseOutput.dtype)).MoveToOuterDisposeScope();
    }
}
