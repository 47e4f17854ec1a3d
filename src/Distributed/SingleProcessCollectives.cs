using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>The collectives of a job of one: every operation leaves the tensors as they are. Lets the training
/// step call its all-reduce hook unconditionally.</summary>
public sealed class SingleProcessCollectives(Device device) : ICollectives
{
    public int Rank => 0;
    public int WorldSize => 1;
    public Device Device { get; } = device;
    public TimeSpan Timeout => System.Threading.Timeout.InfiniteTimeSpan;
    public void AllReduceSum(IReadOnlyList<Tensor> tensors) { }
    public void Broadcast(IReadOnlyList<Tensor> tensors) { }
    public void Barrier(TimeSpan? timeout = null) { }
    public void Dispose() { }
}
