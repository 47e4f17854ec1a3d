using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// LoRA adapters sharing their down projection (<see cref="SharedLoraDown"/>) on tapes. Member i is adapter i's own
/// <see cref="LoraLinearTape"/> over its rows of the concatenated A and its columns of the shared down, so each
/// alone is the per-adapter tape; the group's backward runs A's side once for all instead of once per adapter:
///
///     G = [scaling₀ · dy₀ B₀, scaling₁ · dy₁ B₁, ...]     (N, Σr)    each member writes its columns, its dB beside
///     dA = Gᵀ h                                          (Σr, in)   row block i added into Aᵢ's .grad
///     dx += G A                                          (N, in)    one addmm with K = Σr
///
/// Why: per adapter, dA reads the whole (N, in) input and dx += ... reads and writes the whole (N, in) gradient, for
/// a product of rank r; together each happens once. Arithmetic: every entry is a sum of the same products as the
/// adapters' own (<see cref="LoraLinearTape.Backward"/>), grouped and ordered differently and scaled before the GEMM
/// instead of after, so the two agree up to rounding.
/// </summary>
internal sealed class SharedLoraDownTape : LinearTapeGroup
{
    readonly LoraLinearTape[] adapters;
    readonly Parameter[] aParams;
    readonly Tensor h, aCat;   // (..., in) and (Σr, in) in the compute dtype
    readonly FusedWeightGradient? gradients;   // null: the reference (one product, then an add per A)

    /// <param name="adapters">the members' tapes, taken over.</param>
    /// <param name="aParams">each member's A (rᵢ, in), the fp32 parameter whose .grad receives its rows of dA.</param>
    /// <param name="h">(..., in) the shared input in the compute dtype, a handle the group takes over.</param>
    /// <param name="aCat">(Σr, in) the concatenated A in the compute dtype, a handle the group takes over.</param>
    /// <param name="gradients">how dA's row blocks are added into the A's .grad; null = the reference.</param>
    public SharedLoraDownTape(LoraLinearTape[] adapters, Parameter[] aParams, Tensor h, Tensor aCat, FusedWeightGradient? gradients = null) : base(adapters)
    {
        this.gradients = gradients;
        this.adapters = adapters;
        this.aParams = aParams;
        this.h = h.DetachFromDisposeScope();
        this.aCat = aCat.DetachFromDisposeScope();
    }

    public override Tensor Backward(IReadOnlyList<Tensor> dys, Tensor? inputGrad)
    {
        CheckCount(dys);
        using var scope = NewDisposeScope();
        long n = h.numel() / h.size(-1), totalRank = aCat.size(0);
        var g = empty(n, totalRank, h.dtype, h.device);                                    // (N, Σr), every column written below
        var grad = inputGrad;                                                              // (..., in)
        long offset = 0;
        for (int i = 0; i < adapters.Length; i++)
        {
            long r = aParams[i].size(0);
            grad = adapters[i].BackwardSharingDown(dys[i], grad, g.narrow(1, offset, r));
            offset += r;
        }
        using (no_grad())
        {
            var rowsOfH = h.reshape(n, -1);                                                // (N, in)
            if (aParams.All(a => a.requires_grad))
            {
                // dA = Gᵀ h (Σr, in), row block i into Aᵢ's .grad: G was scaled already (alpha 1).
                LoraLinearTape.AddProducts(gradients, [.. aParams.Select(LoraLinearTape.GradOf)], g.t(), rowsOfH, 1.0);
            }
            else
            {
                offset = 0;
                foreach (var a in aParams)
                {
                    long r = a.size(0);
                    if (a.requires_grad)
                        LoraLinearTape.AddProduct(gradients, LoraLinearTape.GradOf(a), g.narrow(1, offset, r).t(), rowsOfH, 1.0);  // (rᵢ, in)
                    offset += r;
                }
            }
            grad!.reshape(n, -1).addmm_(g, aCat);                                          // (N, in), in place: grad is contiguous
        }
        // A gradient made here (none given) lives in this scope: hand it to the caller's.
        return inputGrad is null ? grad!.MoveToOuterDisposeScope() : grad!;
    }

    public override void Dispose()
    {
        h.Dispose();
        aCat.Dispose();
        base.Dispose();
    }
}
