using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A stored weight that computes its forward product itself instead of being dequantized first: LLM.int8()'s
/// int8 x int8 product with outlier decomposition, the ternary matmul that only adds and subtracts. The frozen
/// matmul (<see cref="FrozenMatMul"/>) calls <see cref="MatMul"/> in forward and still goes through
/// <see cref="IQuantizedWeight.Dequantize"/> in backward (dx = dy @ W, the gradient of the product through the
/// weight the format stands for; any quantization of the activations inside <see cref="MatMul"/> is passed
/// straight through, as bitsandbytes and BitNet do).
/// </summary>
public interface IQuantizedMatMul : IQuantizedWeight
{
    /// <summary>x (..., in) -> x @ W^T (..., out) in <paramref name="computeDType"/>.</summary>
    Tensor MatMul(Tensor x, ScalarType computeDType);
}
