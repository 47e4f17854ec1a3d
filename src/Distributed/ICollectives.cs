using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// The collectives a data-parallel step needs, over all ranks of the job. Every rank calls the same operations in
/// the same order with tensor lists of the same shapes and dtypes (the parameters' gradients are). Each call returns
/// when its result is in the tensors, or throws <see cref="CollectiveException"/> naming this rank, the operation
/// and, when known, the peer that failed, within <see cref="Timeout"/> (a rank that dies is usually noticed at once,
/// a rank that hangs after the timeout). Implementations: <see cref="NcclCollectives"/> (CUDA tensors),
/// <see cref="LoopbackCollectives"/> (CPU, over TCP; for tests), <see cref="SingleProcessCollectives"/> (no-ops).
/// Not thread-safe: one thread (the training thread) makes the calls.
/// </summary>
public interface ICollectives : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>Where the buffers live: cuda:N for NCCL, cpu for the loopback backend. Tensors passed in must be
    /// on this device for NCCL; the loopback backend accepts any.</summary>
    Device Device { get; }

    /// <summary>How long one operation may wait for the other ranks.</summary>
    TimeSpan Timeout { get; }

    /// <summary>In place: every tensor becomes the element-wise sum of that tensor over all ranks. Tensors are
    /// flattened into contiguous buckets (consecutive tensors of one dtype up to a bucket size) and each bucket is
    /// reduced with one call. Sum dtypes: float32, float64, bfloat16, float16.</summary>
    void AllReduceSum(IReadOnlyList<Tensor> tensors);

    /// <summary>In place: every rank's tensors become rank 0's (bucketed like <see cref="AllReduceSum"/>; any dtype).</summary>
    void Broadcast(IReadOnlyList<Tensor> tensors);

    /// <summary>Returns when every rank has called it (an all-reduce of one element). <paramref name="timeout"/>
    /// overrides <see cref="Timeout"/> for waits known to be long, e.g. while every rank loads the model.</summary>
    void Barrier(TimeSpan? timeout = null);
}
