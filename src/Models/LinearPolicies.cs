using QLoraNet.Formats;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Ready-made <see cref="LoadOptions.LinearFactory"/> policies. QLoRA stores the decoder-layer linears in the base
/// format; the output head (the record's <see cref="ModelArchitecture.HeadName"/>) stays dense, as do embeddings
/// and norms (which are not linears here), since its error goes straight into the logits and bitsandbytes'
/// load_in_4bit skips it too (llm_int8_skip_modules: lm_head).
/// </summary>
public static class LinearPolicies
{
    /// <summary>Decoder linears in <paramref name="format"/>, quantized on <paramref name="device"/> as each
    /// weight streams in; the head dense in <paramref name="headDType"/>.</summary>
    /// <param name="aware">quantization-aware training: every decoder linear computes through this format's fake
    /// quantization (<see cref="QuantizationAwareLinear"/>), the head stays as it is.</param>
    public static Func<string, Tensor, FrozenLinear> Quantized(ModelArchitecture arch, BaseFormat format, ScalarType computeDType,
        Device device, ScalarType headDType, KernelSelection? kernels = null, IFakeQuantization? aware = null) =>
        (path, weight) => path == arch.HeadName
            ? FrozenLinearFactory.Create(weight, new DenseFormat(headDType), computeDType, device, path, kernels)
            : aware is null ? FrozenLinearFactory.Create(weight, format, computeDType, device, path, kernels)
            : new QuantizationAwareLinear(FrozenLinearFactory.Create(weight, format, computeDType, device, path, kernels), aware, path);
}
