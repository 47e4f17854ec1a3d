using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>A run of consecutive tensors <c>[First, First + Count)</c> of one dtype, reduced as one flat buffer of
/// <see cref="Elements"/> elements.</summary>
internal sealed record TensorBucket(ScalarType DType, int First, int Count, long Elements);

/// <summary>
/// Bucketing for collectives: one call per bucket instead of one per tensor (LoRA has hundreds of small gradient
/// tensors; each NCCL call costs ~10-30 us of launch and synchronisation), with the bucket size bounding the extra
/// memory (PyTorch DDP's default is 25 MiB). The plan depends only on the tensors' dtypes and sizes, so every rank
/// derives the same one.
/// </summary>
internal static class TensorBuckets
{
    /// <summary>Consecutive tensors of one dtype, closed before the one that would pass <paramref name="maxBytes"/>
    /// (a tensor larger than that is a bucket of its own).</summary>
    public static IReadOnlyList<TensorBucket> Plan(IReadOnlyList<Tensor> tensors, long maxBytes)
    {
        var buckets = new List<TensorBucket>();
        int first = 0;
        long elements = 0, bytes = 0;
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            long n = t.numel(), b = n * t.ElementSize;
            bool sameDtype = i == first || t.dtype == tensors[first].dtype;
            if (i > first && (!sameDtype || bytes + b > maxBytes))
            {
                buckets.Add(new TensorBucket(tensors[first].dtype, first, i - first, elements));
                first = i;
                elements = bytes = 0;
            }
            elements += n;
            bytes += b;
        }
        if (tensors.Count > first) buckets.Add(new TensorBucket(tensors[first].dtype, first, tensors.Count - first, elements));
        return buckets;
    }

    /// <summary>The bucket's tensors as one contiguous 1-D tensor on <paramref name="device"/>: a view of the tensor
    /// itself when the bucket is one contiguous tensor already there (reduced in place, nothing to copy back), else a
    /// new buffer (caller's dispose scope).</summary>
    public static Tensor Pack(IReadOnlyList<Tensor> tensors, TensorBucket b, Device device)
    {
        if (IsInPlace(tensors, b, device)) return tensors[b.First].view(-1);
        var parts = new Tensor[b.Count];
        for (int i = 0; i < b.Count; i++) parts[i] = tensors[b.First + i].detach().reshape(-1).to(device);
        return torch.cat(parts);
    }

    /// <summary>Copies the reduced flat buffer back into the bucket's tensors (nothing to do for an in-place view).</summary>
    public static void Unpack(Tensor flat, IReadOnlyList<Tensor> tensors, TensorBucket b, Device device)
    {
        if (IsInPlace(tensors, b, device)) return;
        long offset = 0;
        for (int i = 0; i < b.Count; i++)
        {
            var t = tensors[b.First + i];
            long n = t.numel();
            t.copy_(flat.narrow(0, offset, n).view(t.shape));
            offset += n;
        }
    }

    static bool IsInPlace(IReadOnlyList<Tensor> tensors, TensorBucket b, Device device)
    {
        if (b.Count != 1) return false;
        var t = tensors[b.First];
        return t.is_contiguous() && t.device_type == device.type && (device.type == DeviceType.CPU || t.device_index == device.index);
    }
}
