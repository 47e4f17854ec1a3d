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
    // Locked: on CUDA, Defer runs on libtorch's device thread while the owner's thread may call Release.
    readonly object _lock = new();
    readonly List<(Tensor Handle, int Thread)> _pending = new();

    /// <summary>Where backward marks the phases of a step (a profiler); null = nobody is listening.</summary>
    public IStepPhaseMarker? PhaseMarker { get; set; }

    /// <summary>Handles deferred and not yet released.</summary>
    public int Count { get { lock (_lock) return _pending.Count; } }

    /// <summary>Marks a tensor returned from backward for release once the backward pass is over.</summary>
    public Tensor Defer(Tensor t)
    {
        lock (_lock) _pending.Add((t, Environment.CurrentManagedThreadId));
        return t;
    }

    /// <summary>Disposes the handles deferred so far (the graph holds its own references where it still needs them).</summary>
    public void Release()
    {
        List<(Tensor Handle, int Thread)> all;
        lock (_lock)
        {
            all = [.. _pending];
            _pending.Clear();
        }
        foreach (var (t, _) in all) t.Dispose();
    }

    /// <summary>
    /// Disposes the handles deferred so far on the calling thread, for a backward function to call as it starts: the
    /// engine runs one thread's backward functions one at a time (a re-entrant backward inside one runs to its end
    /// before the outer one returns), so each of those handles was returned by a call that has finished, and libtorch
    /// took its own reference to the gradient when that call returned (TorchSharp's CSharpNode::apply copies every
    /// returned tensor). Without this, every layer's input gradient (B, T, hidden) stays alive until the end of the
    /// backward pass, one more per layer: 0.5 GiB by the first layer of a 7B model at 2048 tokens.
    /// </summary>
    public void ReleaseReturned()
    {
        int thread = Environment.CurrentManagedThreadId;
        List<Tensor> mine = [];
        lock (_lock)
        {
            for (int i = _pending.Count - 1; i >= 0; i--)
                if (_pending[i].Thread == thread)
                {
                    mine.Add(_pending[i].Handle);
                    _pending.RemoveAt(i);
                }
        }
        foreach (var t in mine) t.Dispose();
    }
}
