using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// Raw access to a contiguous CPU tensor's bytes. TorchSharp's <c>Tensor.bytes</c> is a <see cref="Span{T}"/> and
/// fails above 2 GiB, so big tensors are read and written in chunks through the data pointer instead.
/// </summary>
internal static class NativeTensorMemory
{
    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr handle);

    const int ChunkBytes = 1 << 30;

    /// <summary>Calls <paramref name="action"/> on successive spans (at most 1 GiB each) covering the tensor's bytes.</summary>
    public static unsafe void ForEachChunk(Tensor t, SpanAction action)
    {
        if (t.device_type != DeviceType.CPU) throw new ArgumentException("tensor must be on the CPU");
        if (!t.is_contiguous()) throw new ArgumentException("tensor must be contiguous");
        long total = t.numel() * t.element_size();
        if (total == 0) return;
        byte* p = (byte*)THSTensor_data(t.Handle);
        for (long done = 0; done < total; done += ChunkBytes)
        {
            int n = (int)Math.Min(ChunkBytes, total - done);
            action(new Span<byte>(p + done, n));
        }
    }

    public delegate void SpanAction(Span<byte> chunk);
}
