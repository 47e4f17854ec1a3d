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
///
/// A caller that hands the base output over (<c>ownsBase</c>: a fresh product nothing else reads) gets the sum in
/// that tensor: out-of-place, torch.addmm with a matrix C first copies C into the new result (a device-to-device
/// memcpy, which kernel profilers such as ncu do not list: 8.6 µs for a 2048 x 4096 bf16 output on an H200, 240 times
/// a 7B step, ~2 ms), then runs the same GEMM with beta = 1 on the copy; in place (addmm_) the GEMM reads and writes
/// C where it is. Same GEMM, same operands, so the same values bit for bit (issue 13, docs/BENCHMARKS.md session 32).
/// Only where no autograd graph is built (in-place ops on graph tensors would need their own history) and C is
/// contiguous (a strided C would be copied to a contiguous one and back by torch).
/// </summary>
public static class LoraPath
{
    /// <param name="baseOutput">(..., out) the frozen layer's output, in the compute dtype.</param>
    /// <param name="h">(..., in) the adapter's input (after dropout), in the compute dtype.</param>
    /// <param name="a">(r, in) LoRA A in the compute dtype.</param>
    /// <param name="b">(out, r) LoRA B in the compute dtype.</param>
    /// <returns>(..., out) base + scaling * h A^T B^T.</returns>
    /// <param name="ownsBase">the caller hands <paramref name="baseOutput"/> over (nothing else reads it): the sum may be
    /// made in it, in place (see the class summary).</param>
    public static Tensor AddLowRank(Tensor baseOutput, Tensor h, Tensor a, Tensor b, double scaling, bool ownsBase = false)
    {
        using var scope = NewDisposeScope();
        var down = F.linear(h, a);                                                   // (..., r)
        return AddUp(baseOutput, down, b, scaling, ownsBase).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="AddLowRank"/> from the down projection already made: adapters reading one input make theirs as one
    /// GEMM and pass each its columns (Peft.SharedLoraDown), a strided view that the GEMM reads in place.
    /// </summary>
    /// <param name="baseOutput">(..., out) the frozen layer's output.</param>
    /// <param name="down">(..., r) or (N, r): h A^T in the compute dtype.</param>
    /// <param name="b">(out, r) LoRA B in the compute dtype.</param>
    /// <param name="ownsBase">as <see cref="AddLowRank"/>'s: where it applies (<see cref="InPlace"/>) the result is a new
    /// handle onto <paramref name="baseOutput"/>'s storage, which now holds the sum.</param>
    /// <returns>(..., out) base + scaling * down B^T.</returns>
    public static Tensor AddUp(Tensor baseOutput, Tensor down, Tensor b, double scaling, bool ownsBase = false)
    {
        // addmm wants one dtype; a base whose output is in another (none of ours) takes the reference's casts.
        if (baseOutput.dtype != down.dtype) return ReferenceUp(baseOutput, down, b, scaling);
        using var scope = NewDisposeScope();
        long outF = b.size(0), r = b.size(1);                                        // one native call each; .shape allocates
        if (ownsBase && InPlace(baseOutput, down, b))
        {
            using var c = baseOutput.view(-1, outF);                                 // (N, out), C of the GEMM
            using var bt = b.t();                                                    // (r, out)
            c.addmm_(down.reshape(-1, r), bt, beta: 1, alpha: (float)scaling);       // C = C + scaling * down B^T, no copy of C
            return baseOutput.alias().MoveToOuterDisposeScope();
        }
        var y = torch.addmm(baseOutput.reshape(-1, outF), down.reshape(-1, r), b.t(), beta: 1, alpha: (float)scaling); // (N, out)
        return y.view_as(baseOutput).MoveToOuterDisposeScope();
    }

    /// <summary>Whether a handed-over base output takes the sum in place: no graph is built and it is contiguous.</summary>
    public static bool InPlace(Tensor baseOutput, Tensor down, Tensor b) =>
        !KernelPath.NeedsGraph(baseOutput, down, b) && baseOutput.is_contiguous();

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
