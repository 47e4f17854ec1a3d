using static TorchSharp.torch;

namespace QLoraNet.Quant.Aware;

/// <summary>
/// A deployment quantization seen as a function on dense weights: quantize, then dequantize (a "fake quantization").
/// Quantization-aware training computes with <c>RoundTrip(W)</c> so that it optimises what the quantized model will
/// compute. Implementations: any <see cref="BaseFormat"/> (<see cref="FormatRoundTrip"/>) and GGUF's block types
/// (QLoraNet.Peft.QuantAware.GgufRoundTrip, with llama.cpp's choice of type per tensor).
/// </summary>
public interface IWeightRoundTrip
{
    /// <summary>The spelling the config and messages use ("nf4", "int4-g32", "q4_0").</summary>
    string Name { get; }

    /// <summary>
    /// <paramref name="weight"/> [out, in] as the deployed model holds it: quantized and dequantized, fp32, on the weight's
    /// device. <paramref name="weightName"/> is the checkpoint key ("model.layers.0.self_attn.q_proj.weight"): a per-tensor
    /// policy (GGUF keeps some tensors in other types) decides by it.
    /// </summary>
    Tensor RoundTrip(Tensor weight, string weightName);
}
