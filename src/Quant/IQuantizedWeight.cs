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
}
