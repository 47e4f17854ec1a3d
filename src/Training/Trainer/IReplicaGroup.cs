using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The replicas of a data-parallel run as one training step sees them: every replica holds its own copy of the
/// model and takes its share of each step's micro-batches (<see cref="TrainStep"/> deals micro-batch i to replica
/// i mod <see cref="Size"/>); once per optimizer step the gradients are summed over the replicas (all-reduce), so
/// every copy takes the same update. Every method is a collective: all replicas call it, in the same order.
/// A single-device run is a group of one (<see cref="SingleReplica"/>); NCCL across GPUs, or a loopback across
/// threads for CPU tests, implement the same interface.
/// </summary>
public interface IReplicaGroup
{
    /// <summary>This replica, 0 .. <see cref="Size"/> - 1.</summary>
    int Rank { get; }

    int Size { get; }

    /// <summary>The sum of <paramref name="value"/> over all replicas (token counts, loss sums).</summary>
    double Sum(double value);

    /// <summary>Replaces each gradient by its sum over all replicas, in place.</summary>
    void SumGradients(IReadOnlyList<Tensor> gradients);
}

/// <summary>A run on one device: the group of one, where every sum is the value itself.</summary>
public sealed class SingleReplica : IReplicaGroup
{
    public static readonly SingleReplica Instance = new();

    public int Rank => 0;
    public int Size => 1;
    public double Sum(double value) => value;
    public void SumGradients(IReadOnlyList<Tensor> gradients) { }
}
