using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// How to materialise a checkpoint. The loader knows no quantization format: <paramref name="LinearFactory"/> is
/// the policy that turns each linear weight into a frozen linear (dense, NF4, ...) as it streams in
/// (<see cref="LinearPolicies"/>).
/// </summary>
/// <param name="Device">where every module lives.</param>
/// <param name="ComputeDType">dtype of activations (fp32 for CPU tests, bf16 on GPU).</param>
/// <param name="LinearFactory">(module path such as "model.layers.0.self_attn.q_proj", weight (out, in) on
/// <paramref name="Device"/> in its stored dtype) -> the frozen linear. The loader disposes the weight after the call,
/// so the factory must keep a converted copy or its own handle, never the argument itself.</param>
/// <param name="FrozenDType">dtype of the embedding, norm and bias weights; null = <paramref name="ComputeDType"/>.</param>
/// <param name="Kernels">the kernels linears read from a pre-quantized checkpoint use; null = <see cref="KernelSelection.Portable"/>.</param>
/// <param name="AllowNonFiniteWeights">load weights holding NaN/Inf instead of refusing them by name.</param>
public sealed record LoadOptions(
    Device Device,
    ScalarType ComputeDType,
    Func<string, Tensor, FrozenLinear> LinearFactory,
    ScalarType? FrozenDType = null,
    KernelSelection? Kernels = null,
    bool AllowNonFiniteWeights = false);
