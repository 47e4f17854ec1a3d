using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The replicas of a data-parallel run as the recipe and its step see them: one process per GPU (launched by
/// `train --gpus N` or torchrun), each with its own copy of the model, taking its block of each step's
/// micro-batches (<see cref="TrainStep"/>); once per optimizer step the gradients are summed over the replicas, so
/// every copy takes the same update. Every method but the properties is a collective: all replicas call it, in the
/// same order, and a replica that died or hung makes it throw naming that replica.
/// A single-device run is a group of one (<see cref="SingleReplica"/>); several are <see cref="CollectiveReplicaGroup"/>
/// over NCCL (GPUs) or the loopback TCP backend (CPU: CI, and tests with ranks as threads).
/// </summary>
public interface IReplicaGroup
{
    /// <summary>This replica, 0 .. <see cref="Size"/> - 1. Replica 0 writes the run's files.</summary>
    int Rank { get; }

    int Size { get; }

    /// <summary>The device this replica trains on (each its own GPU), or null: the config's device.</summary>
    Device? Device { get; }

    /// <summary>The sum of <paramref name="value"/> over all replicas (token counts, loss sums, stop votes).</summary>
    double Sum(double value);

    /// <summary>Replaces each tensor (gradients, per-batch loss sums) by its sum over all replicas, in place,
    /// adding the replicas along <see cref="QLoraNet.Distributed.PairwiseOrder"/> where the backend fixes an order.</summary>
    void SumInPlace(IReadOnlyList<Tensor> tensors);

    /// <summary>Makes every replica's tensors replica 0's, in place.</summary>
    void Broadcast(IReadOnlyList<Tensor> tensors);

    /// <summary>Returns when every replica has called it; <paramref name="timeout"/> replaces the usual one for
    /// waits known to be long (every replica loading the model).</summary>
    void Barrier(TimeSpan? timeout = null);
}

/// <summary>A run on one device: the group of one, where every collective leaves the values as they are.</summary>
public sealed class SingleReplica : IReplicaGroup
{
    public static readonly SingleReplica Instance = new();

    public int Rank => 0;
    public int Size => 1;
    public Device? Device => null;
    public double Sum(double value) => value;
    public void SumInPlace(IReadOnlyList<Tensor> tensors) { }
    public void Broadcast(IReadOnlyList<Tensor> tensors) { }
    public void Barrier(TimeSpan? timeout = null) { }
}
