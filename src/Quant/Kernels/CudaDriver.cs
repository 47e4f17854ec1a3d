using System.Reflection;
using System.Runtime.InteropServices;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The few CUDA driver API calls needed to run our own PTX on TorchSharp's CUDA tensors, with no native build of
/// our own: libtorch has already initialised the device and made its primary context current, so we load a module
/// into that context and launch on stream 0 (the legacy default stream libtorch uses, so launches are ordered with
/// its kernels). Library: libcuda.so.1 (Linux) / nvcuda.dll (Windows), resolved at first use.
/// </summary>
internal static unsafe class CudaDriver
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
    [DllImport(Lib)] static extern int cuModuleLoadData(out IntPtr module, byte* image);
    [DllImport(Lib)] static extern int cuModuleGetFunction(out IntPtr fn, IntPtr module, [MarshalAs(UnmanagedType.LPStr)] string name);
    [DllImport(Lib)] static extern int cuLaunchKernel(IntPtr f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz,
        uint sharedMem, IntPtr stream, void** kernelParams, void** extra);
    [DllImport(Lib)] static extern int cuGetErrorString(int err, out IntPtr str);
    [DllImport(Lib)] static extern int cuDeviceGetAttribute(out int value, int attrib, int device);
    [DllImport(Lib)] static extern int cuCtxGetDevice(out int device);
    [DllImport(Lib)] static extern int cuMemGetInfo_v2(out ulong free, out ulong total);

    [DllImport("LibTorchSharp")] static extern IntPtr THSTensor_data(IntPtr handle);

    /// <summary>Raw device (or host) address of a tensor's first element.</summary>
    public static IntPtr DataPointer(TorchSharp.torch.Tensor t) => THSTensor_data(t.Handle);

    public static void Check(int rc, string what)
    {
        if (rc == 0) return;
        string msg = cuGetErrorString(rc, out var p) == 0 && p != IntPtr.Zero ? Marshal.PtrToStringAnsi(p)! : "unknown";
        throw new InvalidOperationException($"CUDA driver call {what} failed: {rc} ({msg})");
    }

    public static IntPtr CurrentContext()
    {
        Check(cuInit(0), "cuInit");
        Check(cuCtxGetCurrent(out var ctx), "cuCtxGetCurrent");
        if (ctx == IntPtr.Zero) throw new InvalidOperationException("no current CUDA context (libtorch has not touched the GPU on this thread)");
        return ctx;
    }

    public static int MultiprocessorCount()
    {
        Check(cuCtxGetDevice(out int dev), "cuCtxGetDevice");
        Check(cuDeviceGetAttribute(out int n, 16 /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */, dev), "cuDeviceGetAttribute");
        return n;
    }

    /// <summary>(free, total) bytes of the current context's device, device-wide (every process and context on it),
    /// or null when no CUDA context is current on this thread.</summary>
    public static (ulong Free, ulong Total)? MemoryInfo()
    {
        if (cuInit(0) != 0 || cuCtxGetCurrent(out var ctx) != 0 || ctx == IntPtr.Zero) return null;
        Check(cuMemGetInfo_v2(out ulong free, out ulong total), "cuMemGetInfo");
        return (free, total);
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

    public static void Launch(IntPtr fn, uint grid, uint block, void** args)
    {
        Check(cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, IntPtr.Zero, args, null), "cuLaunchKernel");
    }
}
