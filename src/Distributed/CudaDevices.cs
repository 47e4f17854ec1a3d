namespace QLoraNet.Distributed;

/// <summary>
/// Picks this rank's GPU: device LOCAL_RANK among the visible ones (CUDA_VISIBLE_DEVICES is honoured as the CUDA
/// runtime does: the launcher leaves it as the user set it, and rank r on a host uses its r-th visible GPU, as
/// under torchrun). <see cref="Select"/> makes that device current on the calling thread, the equivalent of
/// torch.cuda.set_device: call it on the training thread before the model is loaded, so libtorch's "cuda" device,
/// the fused 4-bit kernels' launches and NCCL all use it.
/// </summary>
public static class CudaDevices
{
    /// <summary>Number of visible CUDA devices; 0 when there is no driver.</summary>
    public static int Count()
    {
        try
        {
            if (CudaDriverApi.cuInit(0) != 0) return 0;
            return CudaDriverApi.cuDeviceGetCount(out int n) == 0 ? n : 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return 0;
        }
    }

    /// <summary>Makes device <paramref name="localRank"/>'s primary context current on this thread (retained for the
    /// life of the process) and returns the context.</summary>
    public static IntPtr Select(int localRank)
    {
        int count = Count();
        if (count == 0) throw new InvalidOperationException("no CUDA device is visible (no NVIDIA driver, or CUDA_VISIBLE_DEVICES is empty); the NCCL backend needs one GPU per rank");
        if (localRank < 0 || localRank >= count)
            throw new InvalidOperationException($"LOCAL_RANK={localRank} but only {count} CUDA device{(count == 1 ? " is" : "s are")} visible"
                + (Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") is { } v ? $" (CUDA_VISIBLE_DEVICES={v})" : "")
                + "; launch at most one rank per visible GPU on each host");
        CudaDriverApi.Check(CudaDriverApi.cuDeviceGet(out int device, localRank), "cuDeviceGet");
        CudaDriverApi.Check(CudaDriverApi.cuDevicePrimaryCtxRetain(out var context, device), "cuDevicePrimaryCtxRetain");
        CudaDriverApi.Check(CudaDriverApi.cuCtxSetCurrent(context), "cuCtxSetCurrent");
        return context;
    }
}
