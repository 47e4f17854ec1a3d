using System.Collections.Concurrent;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Deterministic release of the tensor handles that cross a custom autograd function's backward.
/// TorchSharp wraps the incoming gradient in a new managed handle and keeps our returned gradient's handle after
/// copying it into the graph; on CUDA, backward runs on libtorch's device thread, outside every dispose scope, so
/// those handles (each keeping a full activation-sized gradient alive) would wait for the garbage collector:
/// gigabytes per step on a 7B model. Backward functions dispose what they received and <see cref="Defer"/> what
/// they return into the queue of the model they belong to; whoever runs backward on that model calls
/// <see cref="Release"/> once the backward pass is over. One queue per model (not per process), so two models
/// trained side by side in one process never release each other's gradients.
/// Being what every custom backward of a model receives, the queue also carries the model's optional
/// <see cref="PhaseMarker"/> (profiling), so a checkpointed layer can mark its recomputation.
/// </summary>
public sealed class BackwardHandles
{
    // Concurrent: on CUDA, Defer runs on libtorch's device thread while the owner's thread may call Release.
    readonly ConcurrentQueue<Tensor> _pending = new();

    /// <summary>Where backward marks the phases of a step (a profiler); null = nobody is listening.</summary>
    public IStepPhaseMarker? PhaseMarker { get; set; }

    /// <summary>Handles deferred and not yet released.</summary>
    public int Count => _pending.Count;

    /// <summary>Marks a tensor returned from backward for release once the backward pass is over.</summary>
    public Tensor Defer(Tensor t)
    {
        _pending.Enqueue(t);
        return t;
    }

    /// <summary>Disposes the handles deferred so far (the graph holds its own references where it still needs them).</summary>
    public void Release()
    {
        while (_pending.TryDequeue(out var t)) t.Dispose();
    }
}
