using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// The address of a tensor's first element: a device pointer for CUDA tensors (what NCCL takes), host memory for
/// CPU tensors. TorchSharp 0.107 exposes no data pointer, so this calls its native library's <c>THSTensor_data</c>
/// (see /work/shared/TORCHSHARP-NOTES.md, "Custom CUDA kernels from C#"). Valid while the tensor is alive and not resized.
/// </summary>
internal static partial class TensorPointer
{
    [LibraryImport("LibTorchSharp")]
    private static partial IntPtr THSTensor_data(IntPtr handle);

    public static IntPtr Of(Tensor t)
    {
        if (!t.is_contiguous()) throw new ArgumentException("tensor must be contiguous to be passed by address", nameof(t));
        return THSTensor_data(t.Handle);
    }

    /// <summary>The tensor's bytes (a contiguous CPU tensor) as a span, any size below 2^31 bytes.</summary>
    public static unsafe Span<byte> HostBytes(Tensor t)
    {
        if (t.device_type != TorchSharp.DeviceType.CPU) throw new ArgumentException("not a CPU tensor", nameof(t));
        long n = t.numel() * t.ElementSize;
        if (n > int.MaxValue) throw new ArgumentException($"a buffer of {n} bytes is over 2 GiB; use smaller buckets", nameof(t));
        return n == 0 ? Span<byte>.Empty : new Span<byte>((void*)Of(t), (int)n);
    }
}
