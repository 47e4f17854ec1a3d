using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels.Cuda;

/// <summary>The checks every op makes before it hands tensors to a kernel, and their addresses.</summary>
public static class DeviceTensors
{
    /// <summary>True when every tensor is on the same CUDA device.</summary>
    public static bool OnOneCudaDevice(params Tensor[] tensors)
    {
        var first = tensors[0];
        if (first.device_type != DeviceType.CUDA) return false;
        foreach (var t in tensors)
            if (t.device_type != DeviceType.CUDA || t.device_index != first.device_index) return false;
        return true;
    }

    /// <summary>The dtypes our kernels compute in: bf16 (GPU training) and fp32.</summary>
    public static bool IsKernelDType(ScalarType t) => t == ScalarType.BFloat16 || t == ScalarType.Float32;

    /// <summary>The first element sits on a 16-byte boundary (the kernels move 16-byte vectors).</summary>
    public static bool Aligned16(Tensor t) => (long)CudaDriver.DataPointer(t) % 16 == 0;

    public static IntPtr Ptr(Tensor t) => CudaDriver.DataPointer(t);

    /// <summary>Blocks of <paramref name="perBlock"/> work items for <paramref name="items"/> items, or null past the grid limit.</summary>
    public static uint? Blocks(long items, long perBlock)
    {
        long blocks = (items + perBlock - 1) / perBlock;
        return blocks is > 0 and <= int.MaxValue ? (uint)blocks : null;
    }
}
