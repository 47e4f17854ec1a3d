using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>A stored weight that can materialise its dense form; what the frozen matmul keeps for backward.</summary>
public interface IQuantizedWeight
{
    /// <summary>Logical shape of the dense weight, e.g. [out, in].</summary>
    long[] Shape { get; }

    /// <summary>Short format name: "nf4", "nf4-dq", "fp4-b128", "int8", "int4-g64-asym", ...</summary>
    string FormatName { get; }

    /// <summary>Bytes held by the stored form.</summary>
    long StorageBytes { get; }

    /// <summary>A new dense tensor of <see cref="Shape"/> in <paramref name="dtype"/>, on the storage device.</summary>
    Tensor Dequantize(ScalarType dtype);

    /// <summary>
    /// The dense weight written into <paramref name="destination"/> (<see cref="Shape"/>'s elements, in the
    /// destination's dtype, on the storage device): a block of rows of a larger matrix, so that weights one GEMM
    /// reads together (Quant.FrozenLinearGroup: gate and up) sit in one matrix. The values are
    /// <see cref="Dequantize"/>'s; this default makes them and copies, a format with a kernel writes in place.
    /// </summary>
    void DequantizeInto(Tensor destination)
    {
        using var dense = Dequantize(destination.dtype);
        destination.copy_(dense.view(destination.shape));
    }

    /// <summary>Whether this weight joins others in one matrix for one GEMM (Quant.FrozenLinearGroup) when made in
    /// <paramref name="dtype"/>: where <see cref="DequantizeInto"/> writes in place. Elsewhere the default's copy
    /// would cost more than one GEMM saves.</summary>
    bool StacksInto(ScalarType dtype) => false;
}
