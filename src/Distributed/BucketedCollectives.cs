using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// What every backend shares: operation numbering, bucketing of tensor lists (<see cref="TensorBuckets"/>), the
/// barrier as an all-reduce of one element, argument checks, and the rule that a communicator which failed once
/// fails every later call. A backend implements the two flat operations on lists of contiguous 1-D buffers.
/// </summary>
public abstract class BucketedCollectives : ICollectives
{
    /// <summary>PyTorch DDP's default bucket size (bucket_cap_mb = 25).</summary>
    public const long DefaultBucketBytes = 25L << 20;

    static readonly ScalarType[] SumTypes = [ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16];

    readonly long _bucketBytes;
    long _calls;
    string? _failure;
    bool _disposed;

    protected BucketedCollectives(int rank, int worldSize, Device device, TimeSpan timeout, long bucketBytes)
    {
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "world size must be at least 1");
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 0..{worldSize - 1}");
        if (timeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "timeout must be positive");
        if (bucketBytes < 1024) throw new ArgumentOutOfRangeException(nameof(bucketBytes), bucketBytes, "bucket size must be at least 1 KiB");
        Rank = rank;
        WorldSize = worldSize;
        Device = device;
        Timeout = timeout;
        _bucketBytes = bucketBytes;
    }

    public int Rank { get; }
    public int WorldSize { get; }
    public Device Device { get; }
    public TimeSpan Timeout { get; }

    /// <summary>Number of collective calls made so far (operations are named "#N" by this count, from 1).</summary>
    public long Calls => _calls;

    /// <summary>Sums each buffer over all ranks in place; buffers are contiguous 1-D tensors on <see cref="Device"/>.</summary>
    protected abstract void AllReduceFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout);

    /// <summary>Overwrites each buffer with rank 0's.</summary>
    protected abstract void BroadcastFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout);

    /// <summary>Releases the backend's resources; <paramref name="failed"/> when a collective failed (abort, don't drain).</summary>
    protected abstract void Close(bool failed);

    public void AllReduceSum(IReadOnlyList<Tensor> tensors)
    {
        var (op, call) = Begin("all_reduce");
        foreach (var t in tensors)
            if (!SumTypes.Contains(t.dtype))
                throw Fail(new CollectiveException(Rank, op, $"cannot sum {t.dtype} tensors; use float32, float64, bfloat16 or float16"));
        Run(tensors, op, call, Timeout, AllReduceFlat);
    }

    public void Broadcast(IReadOnlyList<Tensor> tensors)
    {
        var (op, call) = Begin("broadcast");
        Run(tensors, op, call, Timeout, BroadcastFlat);
    }

    public void Barrier(TimeSpan? timeout = null)
    {
        var (op, call) = Begin("barrier");
        using var scope = torch.NewDisposeScope();
        var one = torch.ones(1, ScalarType.Float32, Device);
        Run([one], op, call, timeout ?? Timeout, AllReduceFlat);
        float got = one.cpu().item<float>();
        if (got != WorldSize)
            throw Fail(new CollectiveException(Rank, op, $"counted {got} ranks, expected {WorldSize} (the ranks' calls are out of step)"));
    }

    void Run(IReadOnlyList<Tensor> tensors, string op, long call, TimeSpan timeout, Action<IReadOnlyList<Tensor>, string, long, TimeSpan> flatOp)
    {
        try
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var plan = TensorBuckets.Plan(tensors, _bucketBytes);
            var buffers = plan.Select(b => TensorBuckets.Pack(tensors, b, Device)).ToList();
            flatOp(buffers, op, call, timeout);
            for (int i = 0; i < plan.Count; i++) TensorBuckets.Unpack(buffers[i], tensors, plan[i], Device);
        }
        catch (CollectiveException e)
        {
            throw Fail(e);
        }
        catch (Exception e) when (e is not ObjectDisposedException)
        {
            throw Fail(new CollectiveException(Rank, op, e.Message, inner: e));
        }
    }

    (string Op, long Call) Begin(string kind)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long call = ++_calls;
        string op = $"{kind} #{call}";
        if (_failure != null) throw new CollectiveException(Rank, op, $"the communicator failed earlier ({_failure}); stop this rank");
        return (op, call);
    }

    CollectiveException Fail(CollectiveException e)
    {
        _failure ??= e.Message;
        return e;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Close(_failure != null);
        GC.SuppressFinalize(this);
    }
}
