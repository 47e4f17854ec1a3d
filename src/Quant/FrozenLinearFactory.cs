using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>Builds the frozen base linear a <see cref="BaseFormat"/> names, on the device it should live on.</summary>
public static class FrozenLinearFactory
{
    /// <summary>
    /// Moves <paramref name="weight"/> [out, in] to <paramref name="device"/>, stores it there in
    /// <paramref name="format"/> (quantizing on CUDA is fast) and wraps it. <paramref name="name"/> labels errors
    /// (e.g. the checkpoint key); <paramref name="kernels"/> = null is <see cref="KernelSelection.Portable"/>.
    /// </summary>
    public static FrozenLinear Create(Tensor weight, BaseFormat format, ScalarType computeDType, Device device, string? name = null,
        KernelSelection? kernels = null)
    {
        using var scope = NewDisposeScope();
        var onDevice = weight.detach().to(device);
        return format.Create(onDevice, computeDType, kernels ?? KernelSelection.Portable, name); // its constructor took its buffers out of this scope
    }
}
