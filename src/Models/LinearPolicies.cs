using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Ready-made <see cref="LoadOptions.LinearFactory"/> policies. QLoRA quantizes the projections of the decoder
/// layers only; the output head stays dense (as do embeddings and norms, which are not linears here), since its
/// error goes straight into the logits and bitsandbytes' load_in_4bit skips it too (llm_int8_skip_modules: lm_head).
/// </summary>
public static class LinearPolicies
{
    public const string OutputHead = "lm_head";

    /// <summary>Decoder projections in <paramref name="spec"/>'s format, quantized on <paramref name="device"/> as each
    /// weight streams in; the output head dense in <paramref name="headDType"/>.</summary>
    public static Func<string, Tensor, FrozenLinear> Quantized(QuantSpec spec, ScalarType computeDType, Device device, ScalarType headDType) =>
        (path, weight) => path == OutputHead
            ? FrozenLinearFactory.Create(weight, new DenseSpec(headDType), computeDType, device, path)
            : FrozenLinearFactory.Create(weight, spec, computeDType, device, path);
}
