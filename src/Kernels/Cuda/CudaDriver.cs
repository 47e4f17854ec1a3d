using System.Reflection;
using System.Runtime.InteropServices;

namespace QLoraNet.Kernels.Cuda;

/// <summary>
/// The few CUDA driver API calls needed to run our own PTX on TorchSharp's CUDA tensors, with no native build of
/// our own: libtorch has already initialised the device and made its primary context current, so we load a module
/// into that context and launch on stream 0, the legacy default stream, which is libtorch's default ("current")
/// stream: TorchSharp exposes no way to change the current stream, so our launches are ordered with libtorch's
/// kernels. Library: libcuda.so.1 (Linux) / nvcuda.dll (Windows), resolved at first use.
/// </summary>
public static unsafe class CudaDriver
{
    const string Lib = "qln_cuda_driver";

    static CudaDriver()
    {
        NativeLibrary.SetDllImportResolver(typeof(CudaDriver).Assembly, Resolve);
    }

    static IntPtr Resolve(string name, Assembly asm, DllImportSearchPath? path)
    {
        if (name == Lib)
            return NativeLibrary.Load(OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1");
        if (name == "LibTorchSharp" && NativeLibrary.TryLoad("LibTorchSharp", asm, path, out var h))
            return h;
        return IntPtr.Zero;
    }

    [DllImport(Lib)] static extern int cuInit(uint flags);
    [DllImport(Lib)] static extern int cuCtxGetCurrent(out IntPtr ctx);
    [DllImport(Lib)] static extern int cuCtxGetDevice(out int device);
    [DllImport(Lib)] static extern int cuCtxPushCurrent_v2(IntPtr ctx);
    [DllImport(Lib)] static extern int cuCtxPopCurrent_v2(out IntPtr ctx);
    [DllImport(Lib)] static extern int cuDeviceGetAttribute(out int value, int attrib, int device);
    [DllImport(Lib)] static extern int cuDevicePrimaryCtxRetain(out IntPtr ctx, int device);
    [DllImport(Lib)] static extern int cuModuleLoadData(out IntPtr module, byte* image);
    [DllImport(Lib)] static extern int cuModuleGetFunction(out IntPtr fn, IntPtr module, [MarshalAs(UnmanagedType.LPStr)] string name);
    [DllImport(Lib)] static extern int cuLaunchKernel(IntPtr f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz,
        uint sharedMem, IntPtr stream, void** kernelParams, void** extra);
    [DllImport(Lib)] static extern int cuGetErrorString(int err, out IntPtr str);
    [DllImport(Lib)] static extern int cuEventCreate(out IntPtr ev, uint flags);
    [DllImport(Lib)] static extern int cuEventRecord(IntPtr ev, IntPtr stream);
    [DllImport(Lib)] static extern int cuEventSynchronize(IntPtr ev);
    [DllImport(Lib)] static extern int cuEventElapsedTime(out float ms, IntPtr start, IntPtr end);
    [DllImport(Lib)] static extern int cuEventDestroy_v2(IntPtr ev);
    [DllImport(Lib)] static extern int cuMemGetInfo_v2(out ulong free, out ulong total);
    [DllImport(Lib)] static extern int cuStreamCreate(out IntPtr stream, uint flags);
    [DllImport(Lib)] static extern int cuStreamDestroy_v2(IntPtr stream);
    [DllImport(Lib)] static extern int cuStreamSynchronize(IntPtr stream);
    [DllImport(Lib)] static extern int cuStreamWaitEvent(IntPtr stream, IntPtr ev, uint flags);
    [DllImport(Lib)] static extern int cuMemcpyDtoHAsync_v2(IntPtr dstHost, IntPtr srcDevice, nuint bytes, IntPtr stream);
    [DllImport(Lib)] static extern int cuMemcpyHtoDAsync_v2(IntPtr dstDevice, IntPtr srcHost, nuint bytes, IntPtr stream);
    [DllImport(Lib)] static extern int cuMemHostAlloc(out IntPtr p, nuint bytes, uint flags);
    [DllImport(Lib)] static extern int cuMemFreeHost(IntPtr p);
    [DllImport(Lib)] static extern int cuProfilerStart();
    [DllImport(Lib)] static extern int cuProfilerStop();

    [DllImport("LibTorchSharp")] static extern IntPtr THSTensor_data(IntPtr handle);

    /// <summary>Raw device (or host) address of a tensor's first element.</summary>
    public static IntPtr DataPointer(TorchSharp.torch.Tensor t) => THSTensor_data(t.Handle);

    /// <summary>Throws with the driver's message when <paramref name="rc"/> is not CUDA_SUCCESS.</summary>
    public static void Check(int rc, string what)
    {
        if (rc == 0) return;
        string msg = cuGetErrorString(rc, out var p) == 0 && p != IntPtr.Zero ? Marshal.PtrToStringAnsi(p)! : "unknown";
        throw new InvalidOperationException($"CUDA driver call {what} failed: {rc} ({msg})");
    }

    /// <summary>The context libtorch made current on this thread (modules are loaded per context).</summary>
    public static IntPtr CurrentContext()
    {
        Check(cuInit(0), "cuInit");
        Check(cuCtxGetCurrent(out var ctx), "cuCtxGetCurrent");
        if (ctx == IntPtr.Zero) throw new InvalidOperationException("no current CUDA context (libtorch has not touched the GPU on this thread)");
        return ctx;
    }

    /// <summary>Streaming multiprocessors of the current device: sizes persistent grids.</summary>
    public static int MultiprocessorCount()
    {
        Check(cuCtxGetDevice(out int dev), "cuCtxGetDevice");
        Check(cuDeviceGetAttribute(out int n, 16 /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */, dev), "cuDeviceGetAttribute");
        return n;
    }

    public static IntPtr LoadModule(byte[] ptxNullTerminated)
    {
        fixed (byte* p = ptxNullTerminated)
        {
            Check(cuModuleLoadData(out var module, p), "cuModuleLoadData");
            return module;
        }
    }

    public static IntPtr GetFunction(IntPtr module, string name)
    {
        Check(cuModuleGetFunction(out var fn, module, name), $"cuModuleGetFunction({name})");
        return fn;
    }

    /// <summary>
    /// Launches on stream 0 (see the class summary) in <paramref name="context"/>, the context the kernel's module was
    /// loaded into; <paramref name="args"/> points at each argument's value. A thread whose current context is another
    /// device's (a second GPU of a multi-device run) gets the module's pushed for the launch and popped after it, so
    /// libtorch's notion of the current device is left as it was.
    /// </summary>
    public static void Launch(IntPtr context, IntPtr fn, uint gridX, uint gridY, uint blockX, void** args, uint sharedBytes = 0)
    {
        bool pushed = PushContextIfOther(context);
        try
        {
            Check(cuLaunchKernel(fn, gridX, gridY, 1, blockX, 1, 1, sharedBytes, IntPtr.Zero, args, null), "cuLaunchKernel");
        }
        finally
        {
            if (pushed) PopContext();
        }
    }

    /// <summary>The primary context of CUDA device <paramref name="device"/> (the one libtorch and the runtime API use),
    /// retained: call once per device and keep it.</summary>
    public static IntPtr RetainPrimaryContext(int device)
    {
        Check(cuInit(0), "cuInit");
        Check(cuDevicePrimaryCtxRetain(out var ctx, device), "cuDevicePrimaryCtxRetain");
        return ctx;
    }

    /// <summary>Makes <paramref name="context"/> current on this thread when another one is; returns whether it pushed
    /// (then <see cref="PopContext"/> restores the previous one), so libtorch's notion of the current device is kept.</summary>
    public static bool PushContextIfOther(IntPtr context)
    {
        Check(cuCtxGetCurrent(out var current), "cuCtxGetCurrent");
        if (current == context) return false;
        Check(cuCtxPushCurrent_v2(context), "cuCtxPushCurrent");
        return true;
    }

    /// <summary>Undoes a <see cref="PushContextIfOther"/> that pushed.</summary>
    public static void PopContext() => cuCtxPopCurrent_v2(out _);

    /// <summary>Bytes of device memory in use on the current device (by every process and allocator cache), for benchmarks.</summary>
    public static long DeviceMemoryUsed()
    {
        Check(cuMemGetInfo_v2(out ulong free, out ulong total), "cuMemGetInfo");
        return (long)(total - free);
    }

    /// <summary>(free, total) bytes of the current context's device, device-wide (every process and context on it),
    /// or null when no CUDA context is current on this thread.</summary>
    public static (ulong Free, ulong Total)? MemoryInfo()
    {
        if (cuInit(0) != 0 || cuCtxGetCurrent(out var ctx) != 0 || ctx == IntPtr.Zero) return null;
        Check(cuMemGetInfo_v2(out ulong free, out ulong total), "cuMemGetInfo");
        return (free, total);
    }

    /// <summary>
    /// Opens (<paramref name="on"/>) or closes the range an outside profiler captures when started with a capture range
    /// of the profiler API (`nsys profile --capture-range=cudaProfilerApi`); without one, nothing happens. Returns the
    /// driver's error, if any, instead of throwing: a benchmark should not fail over its profiler hooks.
    /// </summary>
    public static string? ProfilerRange(bool on)
    {
        int rc = on ? cuProfilerStart() : cuProfilerStop();
        if (rc == 0) return null;
        return cuGetErrorString(rc, out var p) == 0 && p != IntPtr.Zero ? Marshal.PtrToStringAnsi(p) : $"error {rc}";
    }

    /// <summary>A new stream in the current context that does not synchronize with stream 0
    /// (CU_STREAM_NON_BLOCKING): work on it overlaps stream 0's and is ordered against it by events alone.</summary>
    public static IntPtr CreateNonBlockingStream()
    {
        Check(cuStreamCreate(out var stream, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate");
        return stream;
    }

    public static void DestroyStream(IntPtr stream) => cuStreamDestroy_v2(stream);

    /// <summary>Blocks until the work enqueued on <paramref name="stream"/> has completed.</summary>
    public static void SynchronizeStream(IntPtr stream) => Check(cuStreamSynchronize(stream), "cuStreamSynchronize");

    /// <summary>Work enqueued on <paramref name="stream"/> (IntPtr.Zero: stream 0) after this call waits for the work
    /// enqueued before <paramref name="ev"/>'s last record; the host does not wait.</summary>
    public static void StreamWait(IntPtr stream, Event ev) => Check(cuStreamWaitEvent(stream, ev.Handle, 0), "cuStreamWaitEvent");

    /// <summary>Enqueues a copy of <paramref name="bytes"/> from device to pinned host memory on <paramref name="stream"/>.</summary>
    public static void CopyToHostAsync(IntPtr host, IntPtr device, long bytes, IntPtr stream) =>
        Check(cuMemcpyDtoHAsync_v2(host, device, (nuint)bytes, stream), "cuMemcpyDtoHAsync");

    /// <summary>Enqueues a copy of <paramref name="bytes"/> from pinned host memory to the device on <paramref name="stream"/>.</summary>
    public static void CopyToDeviceAsync(IntPtr device, IntPtr host, long bytes, IntPtr stream) =>
        Check(cuMemcpyHtoDAsync_v2(device, host, (nuint)bytes, stream), "cuMemcpyHtoDAsync");

    /// <summary>Page-locked host memory of the current context (asynchronous copies need it), or a failure naming the size.</summary>
    public static IntPtr AllocatePinned(long bytes)
    {
        Check(cuMemHostAlloc(out var p, (nuint)bytes, 0), $"cuMemHostAlloc({bytes} bytes)");
        return p;
    }

    public static void FreePinned(IntPtr p) => cuMemFreeHost(p);

    /// <summary>A point in stream 0's work: device time between two of them (benchmarks: record, enqueue work,
    /// record, read), or a wait for the work enqueued before it and no later work (<see cref="Synchronize"/>).</summary>
    public sealed class Event : IDisposable
    {
        const uint DisableTiming = 0x2; // CU_EVENT_DISABLE_TIMING: cheaper to record and to wait on

        IntPtr _handle;

        /// <param name="timing">false: an event only waited on (<see cref="MillisecondsSince"/> then fails).</param>
        public Event(bool timing = true)
        {
            Check(cuEventCreate(out _handle, timing ? 0 : DisableTiming), "cuEventCreate");
        }

        public void Record() => Check(cuEventRecord(_handle, IntPtr.Zero), "cuEventRecord");

        /// <summary>Records on <paramref name="stream"/> instead of stream 0.</summary>
        public void Record(IntPtr stream) => Check(cuEventRecord(_handle, stream), "cuEventRecord");

        internal IntPtr Handle => _handle;

        /// <summary>Blocks until the work enqueued on stream 0 before the last <see cref="Record()"/> has completed.</summary>
        public void Synchronize() => Check(cuEventSynchronize(_handle), "cuEventSynchronize");

        /// <summary>Milliseconds from <paramref name="start"/> to this event, waiting for this one to complete.</summary>
        public float MillisecondsSince(Event start)
        {
            Check(cuEventSynchronize(_handle), "cuEventSynchronize");
            Check(cuEventElapsedTime(out float ms, start._handle, _handle), "cuEventElapsedTime");
            return ms;
        }

        public void Dispose()
        {
            if (_handle != IntPtr.Zero) cuEventDestroy_v2(_handle);
            _handle = IntPtr.Zero;
        }
    }
}
