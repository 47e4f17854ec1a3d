using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Quantization-aware training's view of a base format (<see cref="BaseFormat.FakeQuantization"/>): the forward of a
/// linear y = x @ W^T as the format will compute it once the weight is stored in it (weights, and activations where
/// the format quantizes them, rounded to its grid), with straight-through gradients (Bengio et al. 2013): each
/// rounding is the identity in backward, so the gradient reaches W (and, through W = W0 + s·B·A, a LoRA adapter)
/// as if nothing were rounded. Training against it teaches the weights to survive the rounding they will get.
/// </summary>
public interface IFakeQuantization
{
    /// <summary>The format's spelling ("ternary").</summary>
    string Name { get; }

    /// <summary>x (..., in) @ fake(W)^T -> (..., out) in <paramref name="computeDType"/>, differentiable in x and
    /// <paramref name="weight"/> [out, in] by the straight-through estimator.</summary>
    Tensor Linear(Tensor x, Tensor weight, ScalarType computeDType);
}
