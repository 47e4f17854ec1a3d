using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// QAT-LoRA's product (issue 19; torchtune's QAT + LoRA recipe fake-quantizes the merged weight the same way), as a
/// custom autograd function that keeps memory flat:
/// <code>
///   W' = W + s · B A                    fp32 (out, in), LoraMath.MergedWeight's arithmetic: what a merge stores
///   y  = x~ · fake(W')^T                x~ = the format's input rounding (identity but for ternary); output in compute dtype
/// </code>
/// Backward uses the straight-through estimator (Bengio et al. 2013: each rounding is the identity), so with
/// G = gy (N, out), X = x~ (N, in):
/// <code>
///   dx = G · fake(W')                   (N, in)     the rounded weight, made again here
///   dB = s · Gᵀ (X Aᵀ)                  (out, r)    = s · dW' Aᵀ with dW' = Gᵀ X never formed
///   dA = s · (G B)ᵀ X                   (r, in)     = s · Bᵀ dW'
/// </code>
/// Forward saves x~ (an alias of x for weight-only formats), A and B, and a reference to the frozen base: no
/// (out, in) tensor lives between forward and backward, where autograd over fake(W + s·B·A) would keep the fp32
/// merged weight and its rounding for every adapted linear until backward.
/// Call: <c>QuantizationAwareLoraMatMul.Call(x, aware, A, B, scaling)</c>.
/// </summary>
public sealed class QuantizationAwareLoraMatMul : CachelessFunction<QuantizationAwareLoraMatMul>
{
    public override string Name => nameof(QuantizationAwareLoraMatMul);

    /// <summary>fake(W + s·B·A) [out, in] in fp32: the weight a merge into the format stores.</summary>
    public static Tensor FakeMergedWeight(QuantizationAwareLinear aware, Tensor a, Tensor b, double scaling)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var w = aware.Inner.DequantizeWeight(ScalarType.Float32);                        // (out, in)
        var merged = LoraMath.MergedWeight(w, a.detach(), b.detach(), scaling);          // (out, in) fp32
        return aware.RoundTrip(merged).MoveToOuterDisposeScope();
    }

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var (x, aware, a, b, scaling) = ((Tensor)vars[0], (QuantizationAwareLinear)vars[1], (Tensor)vars[2], (Tensor)vars[3], (double)vars[4]);
        var dtype = aware.ComputeDType;
        using var scope = NewDisposeScope();
        var xq = aware.FakeQuantization.QuantizesInput ? aware.FakeInput(x).to(dtype) : x.to(dtype);   // (..., in)
        var w = FakeMergedWeight(aware, a, b, scaling).to(dtype);                        // (out, in), dropped at scope end
        var y = nn.functional.linear(xq, w);                                             // (..., out)
        // A handle on x~ owned by the caller's scope: TorchSharp hands the saved list to libtorch after forward returns.
        ctx.save_for_backward([xq.alias().MoveToOuterDisposeScope(), a, b]);
        ctx.save_data("aware", aware);
        ctx.save_data("scaling", scaling);
        ctx.save_data("inputDType", x.dtype);
        return y.MoveToOuterDisposeScope();
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
        BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

    List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var (xq, a, b) = (saved[0], saved[1], saved[2]);
        var aware = (QuantizationAwareLinear)ctx.get_data("aware");
        double scaling = (double)ctx.get_data("scaling");
        var inputDType = (ScalarType)ctx.get_data("inputDType");
        var dtype = aware.ComputeDType;
        var handles = aware.BackwardHandles;

        Tensor dx, dA, dB;
        using (var scope = NewDisposeScope())
        {
            long outF = aware.OutFeatures, inF = aware.InFeatures;
            var g = gradOutput.to(dtype);                                                // (..., out)
            var w = FakeMergedWeight(aware, a, b, scaling).to(dtype);                    // (out, in), recomputed
            dx = g.matmul(w).to(inputDType).MoveToOuterDisposeScope();                   // (..., in)
            var g2 = g.reshape(-1, outF);                                                // (N, out)
            var x2 = xq.reshape(-1, inF);                                                // (N, in)
            var xa = x2.matmul(a.to(dtype).t());                                         // (N, r)
            dB = g2.t().matmul(xa).mul(scaling).to(ScalarType.Float32).MoveToOuterDisposeScope();      // (out, r)
            var gb = g2.matmul(b.to(dtype));                                             // (N, r)
            dA = gb.t().matmul(x2).mul(scaling).to(ScalarType.Float32).MoveToOuterDisposeScope();      // (r, in)
        }
        foreach (var t in saved) t.Dispose();
        gradOutput.Dispose(); // TorchSharp's handle on the incoming gradient (see BackwardHandles)
        return [handles.Defer(dx), null!, handles.Defer(dA), handles.Defer(dB), null!];
    }
}
