using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// BitNet b1.58's training forward (Ma et al. 2024; Wang et al. 2023, "BitNet", section 2: straight-through estimator
/// for both quantizers), for quantization-aware fine-tuning to <see cref="TernaryFormat"/>:
/// <code>
///   x~ = x + (ActQuant(x) - x).detach()                         8-bit per token (TernaryActivations), fp32
///   W~ = W + (ternary(W) * scale - W).detach()                   scale = bf16(max(mean |W|, 1e-5)), from W itself
///   y  = x~ @ W~^T
/// </code>
/// The forward values are those of a <see cref="TernaryLinear"/> holding ternary(W) (equal up to the rounding of the
/// fp32 sum: this sums n/s * q * scale, the frozen linear sums the integers n * q first); the gradient is that of
/// y = x @ W^T at x~, W~.
/// </summary>
public sealed class TernaryFakeQuantization : IFakeQuantization
{
    public static readonly TernaryFakeQuantization Instance = new();

    TernaryFakeQuantization() { }

    public string Name => TernaryFormat.Name;

    public Tensor Linear(Tensor x, Tensor weight, ScalarType computeDType)
    {
        using var scope = NewDisposeScope();
        var xf = x.to(ScalarType.Float32);
        Tensor xq, wq;
        using (no_grad())
        {
            xq = TernaryActivations.FakeQuantize(xf.reshape(-1, xf.shape[^1])).reshape(xf.shape);
            var w = weight.detach().to(ScalarType.Float32);
            var scale = TernaryWeight.AbsMeanScale(w, null).to(ScalarType.Float32);
            wq = TernaryWeight.Codes(w, scale) * scale;
        }
        var xs = xf + (xq - xf).detach();                                               // value xq, gradient of x
        var wf = weight.to(ScalarType.Float32);
        var ws = wf + (wq - wf).detach();                                               // value wq, gradient of W
        return nn.functional.linear(xs, ws).to(computeDType).MoveToOuterDisposeScope();
    }
}
