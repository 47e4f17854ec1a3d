using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// y = x @ W^T for a frozen stored weight W, as a custom autograd function so that backward keeps only the stored
/// form: forward materialises W in the compute dtype, multiplies and drops it; backward materialises it again for
/// dx = dy @ W and returns no weight gradient (QLoRA section 3: gradients flow through the frozen 4-bit base to the
/// adapters, the base itself gets none). The dense W lives only inside one forward or one backward call.
/// Call: <c>FrozenMatMul.apply(x, weight, computeDType, handles)</c> with weight an <see cref="IQuantizedWeight"/> and
/// handles the <see cref="BackwardHandles"/> of the model the weight belongs to (backward defers its result there).
/// </summary>
public sealed class FrozenMatMul : autograd.SingleTensorFunction<FrozenMatMul>
{
    public override string Name => nameof(FrozenMatMul);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight, computeDType, handles) = ((Tensor)vars[0], (IQuantizedWeight)vars[1], (ScalarType)vars[2], (BackwardHandles)vars[3]);
        // Saved: a reference to the stored weight (already held by the module), the dtypes and the handle queue; no tensor.
        ctx.save_data("weight", weight);
        ctx.save_data("handles", handles);
        ctx.save_data("dtype", computeDType);
        ctx.save_data("inputDType", x.dtype);

        using var scope = NewDisposeScope();
        var w = weight.Dequantize(computeDType);                                   // (out, in), dropped at scope end
        return nn.functional.linear(x.to(computeDType), w).MoveToOuterDisposeScope(); // (..., out)
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var weight = (IQuantizedWeight)ctx.get_data("weight");
        var computeDType = (ScalarType)ctx.get_data("dtype");
        var inputDType = (ScalarType)ctx.get_data("inputDType");
        var handles = (BackwardHandles)ctx.get_data("handles");

        Tensor gradInput;
        using (var scope = NewDisposeScope())
        {
            var w = weight.Dequantize(computeDType);                               // (out, in)
            gradInput = gradOutput.to(computeDType).matmul(w).to(inputDType)       // (..., in)
                .MoveToOuterDisposeScope();
        }
        gradOutput.Dispose(); // TorchSharp's handle on the incoming gradient (see BackwardHandles)
        return [handles.Defer(gradInput), null!, null!, null!];
    }
}
