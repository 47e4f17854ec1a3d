using System.Runtime.InteropServices;

namespace QLoraNet.Distributed;

/// <summary>
/// The few CUDA driver API calls the NCCL backend needs (libcuda.so.1 ships with the NVIDIA driver, so no CUDA
/// runtime of our own is needed): select a device by making its primary context current (what cudaSetDevice does;
/// the CUDA runtime, hence libtorch and NCCL, then see that device as current on this thread), and events to learn
/// without blocking when work queued on the legacy default stream (handle 0, libtorch's default stream) has finished.
/// </summary>
internal static partial class CudaDriverApi
{
    const string Lib = "libcuda.so.1";
    public const int NotReady = 600;             // CUDA_ERROR_NOT_READY
    public const uint EventDisableTiming = 0x2;  // CU_EVENT_DISABLE_TIMING

    [LibraryImport(Lib)] internal static partial int cuInit(uint flags);
    [LibraryImport(Lib)] internal static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Lib)] internal static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Lib)] internal static partial int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [LibraryImport(Lib)] internal static partial int cuCtxGetCurrent(out IntPtr context);
    [LibraryImport(Lib)] internal static partial int cuCtxSetCurrent(IntPtr context);
    [LibraryImport(Lib)] internal static partial int cuEventCreate(out IntPtr ev, uint flags);
    [LibraryImport(Lib)] internal static partial int cuEventRecord(IntPtr ev, IntPtr stream);
    [LibraryImport(Lib)] internal static partial int cuEventQuery(IntPtr ev);
    [LibraryImport(Lib, EntryPoint = "cuEventDestroy_v2")] internal static partial int cuEventDestroy(IntPtr ev);
    [LibraryImport(Lib)] private static partial int cuGetErrorString(int error, out IntPtr text);

    public static void Check(int rc, string call)
    {
        if (rc == 0) return;
        string text = cuGetErrorString(rc, out var p) == 0 && p != IntPtr.Zero ? Marshal.PtrToStringAnsi(p)! : "unknown error";
        throw new InvalidOperationException($"CUDA driver {call} failed: {rc} ({text})");
    }
}
