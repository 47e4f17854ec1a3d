using QLoraNet.Kernels;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// One decoder layer's forward as <see cref="ExplicitLayerBackward.Record"/> ran it, holding what
/// <see cref="ExplicitLayerBackward.Backward"/> reads: the linears' tapes (each keeping the input its backward reads,
/// if any), the norms' statistics and the attention's own small graph (q, k and v as its leaves, merged as its output).
/// Why a class of its own: the record is made either just before its backward (a checkpointed layer's
/// recomputation, <see cref="ExplicitLayerBackward.Run"/>) or by the forward itself and kept until backward (the last
/// decoder layer, whose backward is the first to run after the loss, so recomputing it would only repeat the forward:
/// <see cref="LayerCheckpoint"/>).
/// The tape owns every handle it holds (detached from any dispose scope, so it outlives the forward's scope):
/// backward releases them as it goes (clearing each field), and <see cref="Dispose"/> releases whatever is left (all
/// of it when backward never ran). Disposing twice is harmless.
/// </summary>
public sealed class ExplicitLayerTape : IDisposable
{
    internal ExplicitLayerTape(LlamaDecoderLayer layer) => Layer = layer;

    /// <summary>The layer recorded: its norms, attention and MLP run the backward.</summary>
    internal LlamaDecoderLayer Layer { get; }

    // (B, T, headDim) each: the rotary tables, aliases of the forward's (RoPE's backward un-rotates with them).
    internal Tensor? Cos, Sin;
    // q/k/v on the first normed input, gate/up on the second: groups whose adapters may share their down projection.
    internal LinearTapeGroup? Qkv, GateUp;
    internal LinearTape? O, Down;
    // The norms' statistics: Saved1.H is the layer's input, Saved2.H the residual stream after attention.
    internal FusedRmsNorm.Saved? Saved1, Saved2;
    internal Tensor? Merged;                     // (B, T, nHeads*headDim) the attention's output, with its graph
    internal Tensor? QLeaf, KLeaf, VLeaf;        // (B, heads, T, headDim) the attention graph's leaves

    /// <summary>Whether <see cref="Dispose"/> ran (the record may no longer be used).</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Releases everything still held; what backward already released is skipped.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        IDisposable?[] held = [Qkv, GateUp, O, Down, Saved1, Saved2, Merged, QLeaf, KLeaf, VLeaf, Cos, Sin];
        foreach (var d in held) d?.Dispose();
        (Qkv, GateUp, O, Down, Saved1, Saved2) = (null, null, null, null, null, null);
        (Merged, QLeaf, KLeaf, VLeaf, Cos, Sin) = (null, null, null, null, null, null);
    }
}
