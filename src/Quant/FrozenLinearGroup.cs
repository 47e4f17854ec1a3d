using QLoraNet.Kernels;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Frozen quantized linears that read one input (the MLP's gate and up when they carry no adapter) run as one GEMM:
/// each weight is dequantized into its block of rows of one (Σoutᵢ, in) matrix
/// (<see cref="IQuantizedWeight.DequantizeInto"/>, in place by the NF4 kernel), x is multiplied with it once, and
/// member i's output is its block of columns of the (..., Σoutᵢ) product, a row-strided view (the fused gated unit
/// reads such views as they are, Kernels.FusedGlu). Why: on an H200 at a 7B model's 2048 tokens, gate and up as one
/// (22016 x 4096) GEMM take 499 µs against 550 µs as two in PyTorch; in the training step the GEMM gains ~20 µs a
/// layer and pass, and the gated unit's strided reads of the halves give about as much back, so the step measured
/// the same either way (docs/BENCHMARKS.md, session 29; a transposed product, whose halves are contiguous, would keep
/// the gain). Each output entry is the same dot product as a member's own forward, so the
/// outputs equal the members' up to the GEMM's summation order; on a tape (<see cref="Record"/>) each member's
/// backward is its own (<see cref="FrozenLinearTape"/>, dx = dy W over its block of the dense matrix), unchanged.
/// Only without an autograd graph (a checkpointed forward, a recomputation, inference), and only for weights that
/// write their dense form in place (<see cref="IQuantizedWeight.StacksInto"/>: NF4/FP4 through the CUDA kernel): a dense
/// base or a format without such a kernel would be copied into the matrix, for more than the GEMM saves, and a
/// weight that computes its own product (int8, ternary) has no dense form to share.
/// </summary>
public static class FrozenLinearGroup
{
    /// <summary>The modules as frozen linears that can run as one GEMM on <paramref name="x"/>, or null.</summary>
    public static FrozenLinear[]? Members(IReadOnlyList<object> modules, Tensor x)
    {
        if (modules.Count < 2 || KernelPath.NeedsGraph(x)) return null;
        var frozen = modules.OfType<FrozenLinear>().ToArray();
        if (frozen.Length != modules.Count) return null;
        var first = frozen[0];
        foreach (var f in frozen)
        {
            if (f.MatMulWeight is not { } w || w is IQuantizedMatMul || !w.StacksInto(f.ComputeDType)) return null;
            if (f.ComputeDType != first.ComputeDType || f.InFeatures != first.InFeatures) return null;
        }
        return frozen;
    }

    /// <summary>Every member's forward(x), from one GEMM: (..., outᵢ) views of one (..., Σoutᵢ) product.</summary>
    /// <param name="x">(..., in)</param>
    public static Tensor[] Forward(FrozenLinear[] members, Tensor x)
    {
        using var scope = NewDisposeScope();
        var w = Stacked(members, x.device);                                               // (Σout, in)
        var y = FrozenMatMul.DenseProduct(x, w, members[0].ComputeDType);                 // (..., Σout)
        return [.. Blocks(members, y, dim: -1).Select(b => b.MoveToOuterDisposeScope())];
    }

    /// <summary>Every member's <see cref="FrozenLinear.Record"/> of x, from one GEMM, as a group whose backward is each
    /// member's own; with <paramref name="keepWeight"/> each tape keeps its block of the dense matrix.</summary>
    /// <param name="x">(..., in) in the compute dtype.</param>
    public static LinearTapeGroup Record(FrozenLinear[] members, Tensor x, bool keepWeight)
    {
        using var scope = NewDisposeScope();
        var w = Stacked(members, x.device);                                               // (Σout, in)
        var y = FrozenMatMul.DenseProduct(x, w, members[0].ComputeDType);                 // (..., Σout)
        var outputs = Blocks(members, y, dim: -1);
        var dense = keepWeight ? Blocks(members, w, dim: 0) : null;                       // (outᵢ, in) each, contiguous
        // The tapes own their views (the product's and the matrix's storage live until the last view goes).
        return new LinearTapeGroup([.. members.Select((m, i) =>
            (LinearTape)new FrozenLinearTape(m.MatMulWeight!, m.ComputeDType, outputs[i], dense?[i]))]);
    }

    /// <summary>[W₀; W₁; ...] (Σoutᵢ, in) in the compute dtype, each block written by its weight in place.</summary>
    static Tensor Stacked(FrozenLinear[] members, Device device)
    {
        var w = empty(members.Sum(m => m.OutFeatures), members[0].InFeatures, members[0].ComputeDType, device);
        long row = 0;
        foreach (var m in members)
        {
            using var block = w.narrow(0, row, m.OutFeatures);                            // (outᵢ, in), contiguous
            m.MatMulWeight!.DequantizeInto(block);
            row += m.OutFeatures;
        }
        return w;
    }

    /// <summary>Member i's block of <paramref name="t"/> along <paramref name="dim"/> (its outputs or its rows).</summary>
    static Tensor[] Blocks(FrozenLinear[] members, Tensor t, int dim)
    {
        var blocks = new Tensor[members.Length];
        long offset = 0;
        for (int i = 0; i < members.Length; i++)
        {
            blocks[i] = t.narrow(dim, offset, members[i].OutFeatures);
            offset += members[i].OutFeatures;
        }
        return blocks;
    }
}
