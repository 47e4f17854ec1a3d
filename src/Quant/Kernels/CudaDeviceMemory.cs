using QLoraNet.Kernels.Cuda;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// Memory in use on the CUDA device of this thread's current context, from the driver's <c>cuMemGetInfo</c>
/// (total - free). It is device-wide: the caching allocator's reserved blocks (allocated or cached), the CUDA
/// context itself, and any other process on the device. TorchSharp 0.107 exposes none of libtorch's allocator
/// statistics (torch.cuda.memory_allocated / memory_reserved live in the Python bindings), and the C++ allocator
/// (c10::cuda::CUDACachingAllocator) is reachable only through C++ virtual calls, not a C export; so this is the
/// figure available, and it is named for what it is.
/// </summary>
public static class CudaDeviceMemory
{
    /// <summary>Used and total bytes, or null when no CUDA context is current here (CPU runs) or no driver is loadable.</summary>
    public static (long Used, long Total)? Query()
    {
        try
        {
            return CudaDriver.MemoryInfo() is { } m ? ((long)(m.Total - m.Free), (long)m.Total) : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return null;
        }
    }
}
