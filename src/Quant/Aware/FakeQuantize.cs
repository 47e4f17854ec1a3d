using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Aware;

/// <summary>
/// Fake quantization with the straight-through estimator (Bengio et al. 2013; the form QAT uses, e.g. Jacob et al.
/// 2018): forward RoundTrip(w), backward the identity, d RoundTrip(w) / dw := 1, because the true derivative of
/// rounding is zero almost everywhere and would stop all learning. Call
/// <c>FakeQuantize.apply(w, roundTrip, weightName)</c>; the result is fp32 on w's device. (The LoRA path,
/// QLoraNet.Peft.QuantAwareLoraMatMul, applies the same estimator to W + scaling·B·A without forming its gradient.)
/// </summary>
public sealed class FakeQuantize : autograd.SingleTensorFunction<FakeQuantize>
{
    public override string Name => nameof(FakeQuantize);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (w, roundTrip, name) = ((Tensor)vars[0], (IWeightRoundTrip)vars[1], (string)vars[2]);
        ctx.save_data("dtype", w.dtype);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return roundTrip.RoundTrip(w.detach(), name).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
        [gradOutput.to((ScalarType)ctx.get_data("dtype")), null!, null!];
}
