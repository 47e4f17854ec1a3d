using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Quantization-aware training's view of a base format (<see cref="BaseFormat.FakeQuantization"/>): what the format
/// will do to a linear y = x @ W^T once the weight is stored in it — the weight rounded to its grid and, where the
/// format quantizes activations (BitNet's 8 bits per token), the input too. Both are plain functions on values
/// (no autograd): the aware linears (<see cref="QuantizationAwareLinear"/>, and LoRA over it) apply them inside
/// custom autograd functions that pass gradients straight through each rounding (Bengio et al. 2013), so the
/// gradient reaches a LoRA adapter in W0 + s·B·A as if nothing were rounded, and recompute the rounded weight in
/// backward instead of keeping it. Training against it teaches the weights to survive the rounding they will get.
/// </summary>
public interface IFakeQuantization
{
    /// <summary>The format's spelling ("nf4", "q4_0", "ternary").</summary>
    string Name { get; }

    /// <summary>
    /// <paramref name="weight"/> [out, in] quantized to the format and dequantized again, fp32, on its device: bit for
    /// bit what a model stored in the format computes with. <paramref name="name"/> (the checkpoint key) labels errors.
    /// </summary>
    Tensor Weight(Tensor weight, string? name = null);

    /// <summary>True when the format also rounds the linear's input (<see cref="Input"/> is then not the identity).</summary>
    bool QuantizesInput { get; }

    /// <summary>x (..., in) as the format's matmul sees it, fp32: x itself for weight-only formats.</summary>
    Tensor Input(Tensor x);
}
