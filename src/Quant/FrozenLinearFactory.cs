using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>Builds the frozen base linear a <see cref="QuantSpec"/> names: the one switch over formats.</summary>
public static class FrozenLinearFactory
{
    /// <summary>
    /// Moves <paramref name="weight"/> [out, in] to <paramref name="device"/>, quantizes it there (fast on CUDA) and
    /// wraps it. <paramref name="name"/> labels errors (e.g. the checkpoint key).
    /// </summary>
    public static FrozenLinear Create(Tensor weight, QuantSpec spec, ScalarType computeDType, Device device, string? name = null)
    {
        using var scope = NewDisposeScope();
        var onDevice = weight.detach().to(device);
        FrozenLinear module = spec switch
        {
            DenseSpec dense => new DenseFrozenLinear(onDevice.to(dense.DType ?? onDevice.dtype, copy: true), computeDType),
            FourBitSpec f => new FourBitLinear(FourBitWeight.Quantize(onDevice, f.Type, f.BlockSize, f.DoubleQuant, f.NestedBlockSize, name), computeDType),
            LinearQuantSpec l => new LinearQuantLinear(LinearQuantWeight.Quantize(onDevice, l, name), computeDType),
            _ => throw new ArgumentException($"unsupported base format {spec}"),
        };
        return module; // its constructor took its buffers out of this scope
    }
}
