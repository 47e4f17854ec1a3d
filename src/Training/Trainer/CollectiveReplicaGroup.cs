using QLoraNet.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The replicas of a multi-process run over the job's collectives (<see cref="ICollectives"/>: NCCL between GPUs,
/// the loopback TCP backend on CPU): each replica is one rank, its device the collectives' (cuda:LOCAL_RANK under
/// NCCL). Tensor sums are bucketed all-reduces; a scalar sum is a one-element float64 all-reduce (integers such as
/// token counts stay exact up to 2^53). Failures are the backend's <see cref="CollectiveException"/>, naming the
/// rank that died or hung. The caller owns the collectives (connects them before loading the model, disposes them
/// after the run).
/// </summary>
public sealed class CollectiveReplicaGroup(ICollectives collectives) : IReplicaGroup
{
    public int Rank => collectives.Rank;
    public int Size => collectives.WorldSize;
    public Device? Device => collectives.Device;

    public double Sum(double value)
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(new[] { value }, ScalarType.Float64, collectives.Device);
        collectives.AllReduceSum([t]);
        return t.cpu().item<double>();
    }

    public void SumInPlace(IReadOnlyList<Tensor> tensors) => collectives.AllReduceSum(tensors);

    public void Broadcast(IReadOnlyList<Tensor> tensors) => collectives.Broadcast(tensors);

    public void Barrier(TimeSpan? timeout = null) => collectives.Barrier(timeout);
}
