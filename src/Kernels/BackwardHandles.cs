using System.Collections.Concurrent;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Deterministic release of the tensor handles that cross a custom autograd function's backward.
/// TorchSharp wraps the incoming gradient in a new managed handle and keeps our returned gradient's handle after
/// copying it into the graph; on CUDA, backward runs on libtorch's device thread, outside every dispose scope, so
/// those handles (each keeping a full activation-sized gradient alive) would wait for the garbage collector:
/// gigabytes per step on a 7B model. Backward functions dispose what they received and <see cref="Defer"/> what
/// they return; the training loop calls <see cref="Release"/> after each backward pass.
/// </summary>
public static class BackwardHandles
{
    static readonly ConcurrentQueue<Tensor> Pending = new();

    /// <summary>Marks a tensor returned from backward for release once the backward pass is over.</summary>
    public static Tensor Defer(Tensor t)
    {
        Pending.Enqueue(t);
        return t;
    }

    /// <summary>Disposes the handles deferred so far (the graph holds its own references where it still needs them).</summary>
    public static void Release()
    {
        while (Pending.TryDequeue(out var t)) t.Dispose();
    }
}
