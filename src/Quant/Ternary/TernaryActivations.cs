using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// BitNet b1.58's 8-bit activations (Ma et al. 2024; transformers' integrations/bitnet ActQuant), per token:
/// <code>
///   s = 127 / max(max_j |x_j|, 1e-5)         in fp32; Python's 127 / t is t.reciprocal() * 127, so that is what runs
///   n = clamp(round(x * s), -128, 127)        integer codes, half to even
///   x_q = n / s                               what the ternary matmul multiplies
/// </code>
/// The codes are kept as integers so that the ternary product sums them exactly (<see cref="TernaryMatMul"/>);
/// gradients pass straight through (transformers' ActQuant.backward returns the incoming gradient).
/// </summary>
public static class TernaryActivations
{
    /// <summary>Lower bound of a token's absmax (transformers: clamp_(min=1e-5)).</summary>
    public const float MinAbsMax = 1e-5f;

    /// <summary>x (n, k) -> integer codes (n, k) as fp32 and the per-token scale s (n), fp32.</summary>
    public static (Tensor Codes, Tensor Scale) Quantize(Tensor x)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        var scale = xf.abs().amax([-1]).clamp_min(MinAbsMax).reciprocal() * 127f;        // (n)
        var codes = (xf * scale.unsqueeze(-1)).round().clamp(-128, 127);                  // (n, k)
        return (codes.MoveToOuterDisposeScope(), scale.MoveToOuterDisposeScope());
    }

    /// <summary>The quantized activations n / s in fp32 (what transformers' ActQuant returns), for references.</summary>
    public static Tensor FakeQuantize(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (codes, scale) = Quantize(x);
        return (codes / scale.unsqueeze(-1)).MoveToOuterDisposeScope();
    }
}
