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
        // One native call per tensor at most (a step packs hundreds of LoRA gradients, and this runs on the host's
        // critical path): callers run under no_grad, so no detach; a tensor already on the device is not moved.
        var parts = new Tensor[b.Count];
        for (int i = 0; i < b.Count; i++)
        {
            var t = tensors[b.First + i];
            parts[i] = IsOn(t, device) ? t.reshape(-1) : t.reshape(-1).to(device);
        }
        return torch.cat(parts);
    }

    /// <summary>Copies the reduced flat buffer back into the bucket's tensors (nothing to do for an in-place view).</summary>
    public static void Unpack(Tensor flat, IReadOnlyList<Tensor> tensors, TensorBucket b, Device device)
    {
        if (IsInPlace(tensors, b, device)) return;
        // The buffer's pieces in one call (split), each copied into its tensor through a flat view of the same
        // element order (copy_ takes any strides, so the tensor need not be contiguous).
        var sizes = new long[b.Count];
        for (int i = 0; i < b.Count; i++) sizes[i] = tensors[b.First + i].numel();
        var pieces = flat.split(sizes);
        for (int i = 0; i < b.Count; i++)
        {
            var t = tensors[b.First + i];
            if (t.is_contiguous()) t.view(-1).copy_(pieces[i]);
            else t.copy_(pieces[i].view(t.shape));
        }
    }

    static bool IsInPlace(IReadOnlyList<Tensor> tensors, TensorBucket b, Device device) =>
        b.Count == 1 && tensors[b.First].is_contiguous() && IsOn(tensors[b.First], device);

    static bool IsOn(Tensor t, Device device) =>
        t.device_type == device.type && (device.type == DeviceType.CPU || t.device_index == device.index);
}
