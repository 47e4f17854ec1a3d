using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// BitNet b1.58's training forward (Ma et al. 2024; Wang et al. 2023, "BitNet", section 2: straight-through estimator
/// for both quantizers), for quantization-aware fine-tuning to <see cref="TernaryFormat"/>: the weight's round trip
/// like every weight-only format (ternary(W) * scale, scale = bf16(max(mean |W|, 1e-5)) from W itself), plus the
/// 8-bit per-token activations (<see cref="TernaryActivations"/>) that the ternary linear applies to its input.
/// Forward values are those of a <see cref="TernaryLinear"/> holding ternary(W), up to the rounding of the fp32 sum
/// (this sums n/s * q * scale, the frozen linear sums the integers n * q first).
/// </summary>
public sealed class TernaryFakeQuantization : RoundTripFakeQuantization
{
    public static readonly TernaryFakeQuantization Instance = new();

    TernaryFakeQuantization() : base(new TernaryFormat()) { }

    public override bool QuantizesInput => true;

    /// <summary>x (..., in) -> n / s per token, fp32.</summary>
    public override Tensor Input(Tensor x)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var xf = x.detach().to(ScalarType.Float32);
        return TernaryActivations.FakeQuantize(xf.reshape(-1, xf.shape[^1])).reshape(xf.shape).MoveToOuterDisposeScope();
    }
}
