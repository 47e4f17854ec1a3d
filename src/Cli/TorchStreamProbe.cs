using System.Runtime.InteropServices;

namespace QLoraNet.Cli;

/// <summary>
/// Which CUDA stream libtorch considers current, read through libc10_cuda's C++ entry points (TorchSharp exposes
/// none): <c>c10::cuda::getCurrentCUDAStream(DeviceIndex)</c> returns a 16-byte CUDAStream by value (device type
/// and index, stream id: two integer registers on x86-64 System V), and <c>CUDAStream::stream() const</c> gives its
/// cudaStream_t. Our kernels launch on stream 0 (the legacy default stream); a null handle here confirms that
/// this is libtorch's current stream, so launches are ordered with its kernels. A diagnostic for `bench kernel
/// --stream-probe` only: it depends on libtorch's C++ ABI, so nothing in the product calls it.
/// </summary>
internal static unsafe class TorchStreamProbe
{
    [StructLayout(LayoutKind.Sequential)]
    struct CudaStreamValue
    {
        public long Device; // DeviceType (int8), DeviceIndex (int8), padding
        public long Id;     // StreamId
    }

    public static Dictionary<string, object?> Describe()
    {
        var result = new Dictionary<string, object?> { ["probe"] = "libtorch current CUDA stream" };
        string lib = OperatingSystem.IsWindows() ? "c10_cuda.dll" : "libc10_cuda.so";
        if (!NativeLibrary.TryLoad(lib, typeof(TorchStreamProbe).Assembly, null, out var handle) && !NativeLibrary.TryLoad(lib, out handle))
        {
            result["result"] = lib + " not found";
            return result;
        }
        if (!NativeLibrary.TryGetExport(handle, "_ZN3c104cuda20getCurrentCUDAStreamEa", out var getCurrent)
            || !NativeLibrary.TryGetExport(handle, "_ZNK3c104cuda10CUDAStream6streamEv", out var streamOf))
        {
            result["result"] = "c10::cuda::getCurrentCUDAStream or CUDAStream::stream not exported";
            return result;
        }
        var current = ((delegate* unmanaged<sbyte, CudaStreamValue>)getCurrent)(-1);
        IntPtr cudaStream = ((delegate* unmanaged<CudaStreamValue*, IntPtr>)streamOf)(&current);
        result["stream_id"] = current.Id;
        result["device_index"] = (sbyte)((current.Device >> 8) & 0xff);
        result["cuda_stream"] = "0x" + cudaStream.ToString("x");
        result["result"] = cudaStream == IntPtr.Zero
            ? "the legacy default stream (0): our stream-0 launches are ordered with libtorch's work"
            : "a non-default stream: launches on stream 0 would need an event or this handle to stay ordered";
        return result;
    }
}
