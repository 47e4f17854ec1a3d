using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Activation checkpointing for one decoder layer (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
/// Cost"), re-entrant style like PyTorch's checkpoint(use_reentrant=True): forward runs the layer without building a
/// graph and keeps only its input; backward runs the layer again with a graph and back-propagates through it,
/// which accumulates the LoRA gradients of that layer and yields the gradient of its input. TorchSharp has no
/// checkpointing of its own. Memory per layer drops from every intermediate (attention, MLP, dequantized weights)
/// to one (B, T, hidden) tensor, for one extra forward.
/// Randomness (LoRA dropout) must be the same in the recomputation: like PyTorch's checkpoint (preserve_rng_state),
/// the positions of the layer's random streams (<see cref="IStochasticModule"/>) are saved before the forward, set
/// again for the recomputation, and put back afterwards, so the draws of later layers and micro-batches are untouched.
/// Backward takes the layer's explicit backward (<see cref="ExplicitLayerBackward"/>: no autograd graph in the
/// recomputation) where the layer allows it and <see cref="LlamaDecoderLayer.ExplicitBackward"/> is on, else the
/// autograd recomputation above; the layer counts which ran.
/// The last decoder layers need not be recomputed: the last one's backward is the first to run after the loss, so
/// its recomputation would repeat the forward just done, and each layer before it that memory allows
/// (<see cref="LlamaModel.UncheckpointedLayers"/>) trades its activations, held from forward to backward, for its
/// recomputation. With <c>keepRecord</c> (and the explicit backward applying) the forward itself runs
/// <see cref="ExplicitLayerBackward.Record"/>, which also makes the output, and keeps that
/// <see cref="ExplicitLayerTape"/> until backward, which then skips the recomputation. The last layer's record is
/// what its recomputation would have allocated right after the loss anyway, only held earlier, across the final norm
/// and the loss's own transient buffers; with <c>recordWeights</c> (given for the last layer) and
/// <see cref="LlamaDecoderLayer.KeepWeightsForBackward"/> it keeps the layer's dense weights too. The dropout masks are drawn once, by the forward, as without checkpointing, so the
/// streams stand after it where they stood before. A record whose backward never runs (a forward under grad that is
/// dropped, an exception before backward) is released by the layer's next recorded forward
/// (<see cref="PendingRecord"/>): at most one per layer is ever held; a backward that then finds its record gone
/// recomputes as the other layers do.
/// With a <c>pass</c> of <see cref="HostCheckpoints"/> (training.checkpoints_on_host) the kept input is a stash in host
/// memory, brought back to the device for the layer's backward: the (B, T, hidden) per checkpointed layer leaves the
/// device between its forward and its backward, once the caller frees it (the copies overlap the layers' work on a
/// GPU; see there). The values are the same, so the gradients are too. The caller gives a pass for the layers it
/// wants stashed (not the first: the embedding's output, which it holds anyway).
/// Call: <c>LayerCheckpoint.CallReleasingForwardHandle(hidden, layer, cos, sin, mask, handles, keepRecord, recordWeights, pass)</c> (or Call); hidden must require grad
/// (the caller sets it on the embedding output, which is frozen) or backward never reaches this layer; handles is the
/// model's <see cref="BackwardHandles"/>, where backward defers the gradient it returns.
/// </summary>
public sealed class LayerCheckpoint : CachelessFunction<LayerCheckpoint>
{
    public override string Name => nameof(LayerCheckpoint);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var hidden = (Tensor)vars[0];
        var layer = (LlamaDecoderLayer)vars[1];
        var (cos, sin, mask, handles) = ((Tensor)vars[2], (Tensor)vars[3], (Tensor?)vars[4], (BackwardHandles)vars[5]);
        var (keepRecord, recordWeights, pass) = ((bool)vars[6], (bool)vars[7], (HostCheckpoints.Pass?)vars[8]);
        // The input goes to host memory (its copy overlapping the layer's work on a GPU), or is kept as it is.
        var stash = pass?.Put(hidden);
        // Tensors go through save_for_backward (autograd keeps them alive after the caller's dispose scope ends);
        // the layer, the stash, the stream positions and the handle queue are plain data.
        Tensor[] others = mask is null ? [cos, sin] : [cos, sin, mask];
        ctx.save_for_backward(stash is null ? [hidden, .. others] : [.. others]);
        ctx.save_data("stash", stash!);
        ctx.save_data("layer", layer);
        ctx.save_data("handles", handles);
        ctx.save_data("rng", StreamPositions(layer));   // for a recomputation (also a recorded layer's, if its record was released)
        using var noGrad = torch.no_grad();
        try
        {
            if (keepRecord && layer.ExplicitBackward && ExplicitLayerBackward.Supports(layer, hidden.dtype))
            {
                var (tape, output) = ExplicitLayerBackward.Record(layer, hidden, cos, sin, mask,
                    recordWeights && layer.KeepWeightsForBackward, output: true);
                layer.PendingRecord.Hold(tape);
                ctx.save_data("tape", tape);
                return output!;                                                                  // (B, T, hidden)
            }
            ctx.save_data("tape", null!);
            return layer.forward(hidden, cos, sin, mask);
        }
        finally
        {
            stash?.AfterLayer();   // after the layer's work (or its failure): the caller may free the input then
        }
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
        BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

    List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var handles = (BackwardHandles)ctx.get_data("handles");
        handles.ReleaseReturned();   // the gradients earlier backward calls returned: the graph holds what it needs
        var saved = ctx.get_saved_variables();
        var stash = ctx.get_data("stash") as HostCheckpoints.Stash;
        int first = stash is null ? 1 : 0;     // saved: [input,] cos, sin[, mask]
        var (cos, sin, mask) = (saved[first], saved[first + 1], saved.Count > first + 2 ? saved[first + 2] : null);
        var layer = (LlamaDecoderLayer)ctx.get_data("layer");
        var atForward = (List<(RandomStream Stream, RandomStream.Position State)>)ctx.get_data("rng");
        if (ctx.get_data("tape") is ExplicitLayerTape tape && layer.PendingRecord.Take(tape))
            return GradientOfHidden(handles.Defer(BackwardFromRecord(layer, tape, gradOutput, handles.PhaseMarker, saved)));

        // A checkpoint kept in host memory comes back to the device (and the one before it starts coming back).
        bool moved = stash is not null;
        var hidden = stash?.Take() ?? saved[0];                                                  // (B, T, hidden)
        using var enableGrad = torch.enable_grad();
        var current = atForward.Select(s => (s.Stream, s.Stream.State)).ToList();
        Restore(atForward);
        Tensor gradInput;
        try
        {
            using var scope = NewDisposeScope();
            handles.PhaseMarker?.Enter(StepPhase.Recompute);
            if (layer.ExplicitBackward && ExplicitLayerBackward.Supports(layer, hidden.dtype))
            {
                layer.CountBackward(explicitly: true);
                using var noGrad = torch.no_grad();
                gradInput = ExplicitLayerBackward.Run(layer, hidden, cos, sin, mask, gradOutput, layer.KeepWeightsForBackward,
                    handles.PhaseMarker).MoveToOuterDisposeScope();
            }
            else
            {
                layer.CountBackward(explicitly: false);
                var input = hidden.detach().requires_grad_(true);
                var output = layer.forward(input, cos, sin, mask);
                handles.PhaseMarker?.Enter(StepPhase.Backward);
                torch.autograd.backward([output], [gradOutput]);
                BackwardFailure.ThrowIfFailed();                 // a failure inside: stop here, not after the other layers
                gradInput = (input.grad ?? torch.zeros_like(input)).MoveToOuterDisposeScope();
            }
        }
        finally
        {
            Restore(current);
        }
        // On CUDA this runs on libtorch's device thread, outside any dispose scope: release the handles now.
        if (moved) hidden.Dispose();
        foreach (var t in saved) t?.Dispose();
        gradOutput.Dispose();
        return GradientOfHidden(handles.Defer(gradInput));
    }

    /// <summary>One gradient per argument of apply: the hidden states' and none for the rest.</summary>
    static List<Tensor> GradientOfHidden(Tensor gradHidden) => [gradHidden, null!, null!, null!, null!, null!, null!, null!, null!];

    /// <summary>The explicit backward from the record the forward kept: nothing is recomputed and no stream is moved
    /// (the forward drew the masks). Releases the record and the saved handles.</summary>
    static Tensor BackwardFromRecord(LlamaDecoderLayer layer, ExplicitLayerTape tape, Tensor gradOutput, IStepPhaseMarker? marker,
        List<Tensor> saved)
    {
        try
        {
            using var scope = NewDisposeScope();
            // Both marks, as for every checkpointed layer: a profiler's phases stay per layer (this Recompute is empty).
            marker?.Enter(StepPhase.Recompute);
            layer.CountBackward(explicitly: true);
            layer.CountRecordedBackward();
            marker?.Enter(StepPhase.Backward);
            using var noGrad = torch.no_grad();
            return ExplicitLayerBackward.Backward(tape, gradOutput).MoveToOuterDisposeScope();   // (B, T, hidden)
        }
        finally
        {
            // On CUDA this runs on libtorch's device thread, outside any dispose scope: release the handles now.
            tape.Dispose();
            foreach (var t in saved) t?.Dispose();
            gradOutput.Dispose();
        }
    }

    /// <summary>The position of every distinct random stream the layer's modules draw from.</summary>
    static List<(RandomStream Stream, RandomStream.Position State)> StreamPositions(LlamaDecoderLayer layer) =>
        layer.modules().OfType<IStochasticModule>().Select(m => m.Random).Distinct()
            .Select(r => (r, r.State)).ToList();

    static void Restore(IEnumerable<(RandomStream Stream, RandomStream.Position State)> states)
    {
        foreach (var (stream, state) in states) stream.Restore(state);
    }
}
