using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// The backward of a checkpointed decoder layer written out by hand: the recomputation runs without autograd,
/// each linear on a <see cref="LinearTape"/> and each norm keeping its statistics, and the gradients are then taken
/// op by op in reverse. Only the attention proper (SDPA, or the explicit scores) goes through autograd, as a graph
/// of its own with q, k and v as leaves. Why: through autograd, the recomputation builds a graph of about a hundred
/// nodes per layer, a dozen of them custom functions whose backward crosses from libtorch into managed code and
/// back; on a 7B model on an H200 that host work (TorchSharp's node, handle and dispose-scope machinery) took longer
/// than the GPU's, so the GPU waited (docs/BENCHMARKS.md, session 25's host profile). Here the host issues the
/// ops and nothing else. It also does less arithmetic:
/// <list type="bullet">
/// <item>the down projection's frozen product is not recomputed: the layer's output feeds only the next layer,
/// whose input the checkpoint kept, so backward never reads it (~1/7 of the recomputation's matmuls on Llama);</item>
/// <item>with <c>keepWeights</c>, each frozen weight dequantized for the recomputation is kept for its backward
/// (one dequantization instead of two; the layer's dense weights are held until then);</item>
/// <item>q, k and v read one input and are recorded as one group (and so are gate and up) (<see cref="LinearSlots.RecordShared"/>): their
/// LoRA adapters, when none drops its input, make their down projections one GEMM and, in backward, their dA one GEMM
/// and their dx one addmm (Peft.SharedLoraDownTape), instead of three each, each reading (N, hidden); frozen NF4
/// gate and up, with no adapters, are one GEMM where the CUDA kernel dequantizes in place (Quant.FrozenLinearGroup).</item>
/// </list>
/// Gradients equal autograd's up to rounding: sums of input gradients accumulate inside the GEMMs (addmm) and round
/// once, where autograd rounds each product and then the sum. The pre-norm layer of Llama, Mistral, Qwen2 and Gemma
/// (no post-norms, no sub-norms, frozen norms, a fused gated activation, every linear on a tape) takes this path; others keep the
/// autograd recomputation (<see cref="Supports"/>). Reference: <see cref="LayerCheckpoint"/>'s autograd path, which
/// the parity tests hold this to.
/// </summary>
public static class ExplicitLayerBackward
{
    static readonly LinearRole[] AttentionRoles = [LinearRole.Query, LinearRole.Key, LinearRole.Value, LinearRole.Output];
    static readonly LinearRole[] QkvRoles = [LinearRole.Query, LinearRole.Key, LinearRole.Value];
    static readonly LinearRole[] MlpRoles = [LinearRole.Gate, LinearRole.Up, LinearRole.Down];
    static readonly LinearRole[] GateUpRoles = [LinearRole.Gate, LinearRole.Up];

    /// <summary>Whether <paramref name="layer"/> has the structure this backward writes out, every linear can run on
    /// a tape in <paramref name="dtype"/> (the hidden states' dtype), and the norms are the pre-norms alone.</summary>
    public static bool Supports(LlamaDecoderLayer layer, ScalarType dtype)
    {
        var (attention, mlp) = (layer.SelfAttn, layer.Mlp);
        if (layer.Norm(NormRole.PreAttention) is not { } norm1 || layer.Norm(NormRole.PreMlp) is not { } norm2) return false;
        if (norm1.Weight.requires_grad || norm2.Weight.requires_grad) return false;   // no norm gradients here
        if (layer.Norm(NormRole.PostAttention) is not null || layer.Norm(NormRole.PostMlp) is not null) return false;
        if (attention.SubNorm is not null || mlp.SubNorm is not null || mlp.FusedActivation is null) return false;
        return AttentionRoles.All(r => attention.Projections.SupportsTape(r) && ComputesIn(attention.Projections, r, dtype))
            && MlpRoles.All(r => mlp.Projections.SupportsTape(r) && ComputesIn(mlp.Projections, r, dtype));
    }

    static bool ComputesIn(LinearSlots slots, LinearRole role, ScalarType dtype) => slots.ComputeDType(role) == dtype;

    /// <summary>
    /// Recomputes the layer at <paramref name="hidden"/> and returns dL/dhidden for dL/doutput =
    /// <paramref name="gradOutput"/>, adding the adapters' gradients into their <c>.grad</c>: <see cref="Record"/>
    /// then <see cref="Backward"/>. Random streams must already be where the layer's forward found them (the caller
    /// restores them, as for the autograd path).
    /// </summary>
    /// <param name="hidden">(B, T, hidden) the layer's input, as the checkpoint kept it.</param>
    /// <param name="cos">(B, T, headDim)</param>
    /// <param name="sin">(B, T, headDim)</param>
    /// <param name="mask">the forward's attention mask, or null (causal).</param>
    /// <param name="gradOutput">(B, T, hidden)</param>
    /// <param name="keepWeights">keep each dense weight from the recomputation for its backward.</param>
    /// <param name="marker">marks where the recomputation ends and the backward begins (a profiler), or null.</param>
    public static Tensor Run(LlamaDecoderLayer layer, Tensor hidden, Tensor cos, Tensor sin, Tensor? mask, Tensor gradOutput,
        bool keepWeights, IStepPhaseMarker? marker = null)
    {
        using var tape = Record(layer, hidden, cos, sin, mask, keepWeights, output: false).Tape;
        marker?.Enter(StepPhase.Backward);
        return Backward(tape, gradOutput);
    }

    /// <summary>
    /// The layer's forward at <paramref name="hidden"/> on a tape for <see cref="Backward"/>: forward's arithmetic, no
    /// graph but the attention's own. With <paramref name="output"/> the layer's output is made too, as
    /// <see cref="LlamaDecoderLayer.forward(Tensor, Tensor, Tensor, Tensor?, KvCache?)"/> makes it (the same ops on the
    /// same values: a forward that keeps its record instead of being recomputed); without it the down projection's
    /// frozen product is skipped, since a recomputation's output feeds only the next layer, whose input the
    /// checkpoint kept, so backward never reads it (~1/7 of the recomputation's matmuls on Llama).
    /// Draws the layer's LoRA dropout masks, as its forward does.
    /// </summary>
    /// <param name="hidden">(B, T, hidden)</param>
    /// <param name="cos">(B, T, headDim)</param>
    /// <param name="sin">(B, T, headDim)</param>
    /// <param name="mask">the attention mask, or null (causal).</param>
    /// <param name="keepWeights">keep each dense weight for its backward (one dequantization instead of two).</param>
    /// <returns>The tape, owning what it keeps (dispose it); Output (B, T, hidden) in the caller's dispose scope with
    /// <paramref name="output"/>, else null.</returns>
    public static (ExplicitLayerTape Tape, Tensor? Output) Record(LlamaDecoderLayer layer, Tensor hidden, Tensor cos, Tensor sin,
        Tensor? mask, bool keepWeights, bool output)
    {
        var (attention, mlp) = (layer.SelfAttn, layer.Mlp);
        var (attnSlots, mlpSlots) = (attention.Projections, mlp.Projections);
        var (norm1, norm2) = (layer.Norm(NormRole.PreAttention)!, layer.Norm(NormRole.PreMlp)!);
        long nHeads = attention.NumHeads, nKv = attention.NumKvHeads;
        var tape = new ExplicitLayerTape(layer);
        Tensor? result = null;
        using var scope = NewDisposeScope();
        try
        {
            tape.Cos = cos.alias();
            tape.Sin = sin.alias();
            using (no_grad())
            {
                // The linears' inputs (normed1, normed2, gated) are released once recorded: an adapter's tape keeps
                // its own handle of what its backward reads, and a frozen linear's reads none, so a frozen consumer's
                // input is freed here instead of being held until backward.
                (var normed1, tape.Saved1) = norm1.ForwardSaving(hidden);                           // (B, T, hidden)
                // q, k and v read normed1: one group, whose adapters may share their down projection (and A's side of backward).
                tape.Qkv = attnSlots.RecordShared(QkvRoles, normed1, keepWeights);
                normed1.Dispose();
                var (tq, tk, tv) = (tape.Qkv.Members[0], tape.Qkv.Members[1], tape.Qkv.Members[2]);
                var q = attention.SplitHeads(tq.Output!, nHeads);                                    // (B, nHeads, T, headDim)
                var k = attention.SplitHeads(tk.Output!, nKv);                                       // (B, nKv, T, headDim)
                var v = attention.SplitHeads(tv.Output!, nKv);                                       // (B, nKv, T, headDim)
                var (qr, kr) = attention.Rope.ApplyQk(q, k, cos, sin, attention.Handles);             // same layouts, rotated
                (tape.QLeaf, tape.KLeaf, tape.VLeaf) = (qr.requires_grad_(true), kr.requires_grad_(true), v.detach().requires_grad_(true));
                q.Dispose();                                                                          // the views, then the projections
                k.Dispose();
                tq.ReleaseOutput();
                tk.ReleaseOutput();
            }
            using (enable_grad())
                tape.Merged = attention.Attend(tape.QLeaf, tape.KLeaf, tape.VLeaf, mask, hidden.device); // (B, T, nHeads*headDim), a graph
            using (no_grad())
            {
                using (var mergedValue = tape.Merged.detach())
                    tape.O = attnSlots.Record(LinearRole.Output, mergedValue, keepWeights);
                (var normed2, tape.Saved2) = norm2.ForwardSaving(tape.O.Output!, hidden);           // h = hidden + o; norm(h)
                tape.O.ReleaseOutput();
                // gate and up read normed2: one group, like q/k/v (with LoRA on them, e.g. all linear layers), or one
                // GEMM when both are frozen and the MLP stacks them (the fused gated unit reads the product's two halves as
                // they are).
                tape.GateUp = mlpSlots.RecordShared(GateUpRoles, normed2, keepWeights, stackFrozen: mlp.StackFrozenGateUp);
                normed2.Dispose();
                var (tg, tu) = (tape.GateUp.Members[0], tape.GateUp.Members[1]);
                var gated = mlp.Glu.Apply(tg.Output!, tu.Output!, mlp.FusedActivation!.Value, mlp.Handles); // (B, T, intermediate)
                // Backward never reads the down projection's product; only a forward needs it, for the output.
                if (output)
                {
                    // The forward's "h + mlp(normed)", made as LlamaMlp.ForwardAdding makes it (in the down projection's
                    // GEMM where it adds there, so that a kept record's output is the forward's bit for bit): h is the
                    // residual stream the pre-MLP norm summed (Saved2.H).
                    (tape.Down, var sum) = mlpSlots.RecordAdding(LinearRole.Down, gated, tape.Saved2.H, keepWeight: false);
                    result = sum.MoveToOuterDisposeScope();                                             // (B, T, hidden)
                }
                else
                    tape.Down = mlpSlots.Record(LinearRole.Down, gated, keepWeight: false, product: false);
                gated.Dispose();
            }
            // The tape outlives this scope (and the caller's, when a forward keeps it): it owns its handles.
            foreach (var t in new[] { tape.Cos, tape.Sin, tape.Merged, tape.QLeaf, tape.KLeaf, tape.VLeaf })
                t.DetachFromDisposeScope();
            foreach (var saved in new[] { tape.Saved1, tape.Saved2 })
            {
                saved.H.DetachFromDisposeScope();
                saved.InverseRms.DetachFromDisposeScope();
            }
            return (tape, result);
        }
        catch
        {
            tape.Dispose();
            result?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// dL/dhidden of the layer <paramref name="tape"/> recorded, for dL/doutput = <paramref name="gradOutput"/>, adding
    /// the adapters' gradients into their <c>.grad</c>; the gradients are taken op by op in reverse, releasing the
    /// tape's holdings once read (the caller still disposes the tape: the attention's leaves and the rotary tables,
    /// and everything on an exception).
    /// </summary>
    /// <param name="gradOutput">(B, T, hidden)</param>
    /// <returns>(B, T, hidden) in the caller's dispose scope.</returns>
    public static Tensor Backward(ExplicitLayerTape tape, Tensor gradOutput)
    {
        ObjectDisposedException.ThrowIf(tape.IsDisposed, tape);
        var layer = tape.Layer;
        var (attention, mlp) = (layer.SelfAttn, layer.Mlp);
        var (norm1, norm2) = (layer.Norm(NormRole.PreAttention)!, layer.Norm(NormRole.PreMlp)!);
        var (tqkv, tgu, to, td) = (tape.Qkv!, tape.GateUp!, tape.O!, tape.Down!);
        var (tg, tu) = (tgu.Members[0], tgu.Members[1]);
        var (saved1, saved2) = (tape.Saved1!, tape.Saved2!);
        var (merged, qLeaf, kLeaf, vLeaf) = (tape.Merged!, tape.QLeaf!, tape.KLeaf!, tape.VLeaf!);
        using var scope = NewDisposeScope();

        // ---- Backward, in reverse.
        Tensor dHidden;
        using (no_grad())
        {
            var dGated = td.Backward(gradOutput, null);                                          // (B, T, intermediate)
            td.Dispose();
            tape.Down = null;
            var (dGate, dUp) = mlp.Glu.Backward(dGated, tg.Output!, tu.Output!, mlp.FusedActivation!.Value);
            dGated.Dispose();
            tg.ReleaseOutput();
            tu.ReleaseOutput();
            var dNormed2 = tgu.Backward([dGate, dUp], null);                                     // (B, T, hidden)
            foreach (var d in new IDisposable[] { dGate, dUp, tgu }) d.Dispose();
            tape.GateUp = null;
            // h = hidden + o gets the output's gradient (the residual) and the norm's: both reach hidden and o.
            dHidden = norm2.Backward(dNormed2, saved2, gradOutput);                              // (B, T, hidden)
            dNormed2.Dispose();
            saved2.Dispose();
            tape.Saved2 = null;
            var dMerged = to.Backward(dHidden, null);                                            // (B, T, nHeads*headDim)
            to.Dispose();
            tape.O = null;
            List<Tensor> dqkv;
            using (enable_grad())
                dqkv = [.. autograd.grad([merged], [qLeaf, kLeaf, vLeaf], [dMerged])];
            BackwardFailure.ThrowIfFailed();
            merged.Dispose();
            tape.Merged = null;
            dMerged.Dispose();
            var (dq, dk) = attention.Rope.BackwardQk(dqkv[0], dqkv[1], tape.Cos!, tape.Sin!);   // (B, heads, T, headDim)
            var dNormed1 = tqkv.Backward([attention.MergeHeads(dq), attention.MergeHeads(dk), attention.MergeHeads(dqkv[2])], null); // (B, T, hidden)
            tqkv.Dispose();
            tape.Qkv = null;
            dHidden = norm1.Backward(dNormed1, saved1, dHidden);                                 // + the residual's
            saved1.Dispose();
            tape.Saved1 = null;
        }
        return dHidden.MoveToOuterDisposeScope();
    }
}
