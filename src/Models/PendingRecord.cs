namespace QLoraNet.Models;

/// <summary>
/// The record a decoder layer's forward kept for its backward (<see cref="LayerCheckpoint"/>, the last layer), held
/// here as well as in the autograd context so that a record whose backward never runs cannot hold device memory for
/// good: the layer's next recorded forward disposes it. Why not rely on the context alone: whether and when
/// TorchSharp lets go of a custom function's context when its graph is dropped unused is not ours to decide, and a
/// finalizer would free CUDA memory at the collector's pace. A backward takes its record from here (<see cref="Take"/>);
/// if it finds another there, its own was released and it recomputes instead. At most one record per layer is held.
/// Thread-safe: on CUDA backward runs on libtorch's device thread. Each layer has its own
/// (<see cref="LlamaDecoderLayer.PendingRecord"/>), released with the layer.
/// </summary>
sealed class PendingRecord : IDisposable
{
    readonly Lock gate = new();
    ExplicitLayerTape? held;

    /// <summary>Holds <paramref name="tape"/> until its backward, disposing the one held before (its backward never
    /// ran, or will recompute).</summary>
    public void Hold(ExplicitLayerTape? tape)
    {
        ExplicitLayerTape? previous;
        lock (gate) (previous, held) = (held, tape);
        previous?.Dispose();
    }

    /// <summary>Whether <paramref name="tape"/> is still held; if so it is the caller's now (to dispose).</summary>
    public bool Take(ExplicitLayerTape tape)
    {
        lock (gate)
        {
            if (!ReferenceEquals(held, tape)) return false;
            held = null;
            return true;
        }
    }

    /// <summary>Releases the record still held (its backward never ran).</summary>
    public void Dispose() => Hold(null);
}
