using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// y = x @ W^T for a frozen stored weight W, as a custom autograd function so that backward keeps only the stored
/// form: forward materialises W in the compute dtype, multiplies and drops it; backward materialises it again for
/// dx = dy @ W and returns no weight gradient (QLoRA section 3: gradients flow through the frozen 4-bit base to the
/// adapters, the base itself gets none). The dense W lives only inside one forward or one backward call.
/// A weight that computes its own product (<see cref="IQuantizedMatMul"/>) does so in forward; backward is the same.
/// Call: <c>FrozenMatMul.Apply(x, weight, computeDType, handles)</c> with weight an <see cref="IQuantizedWeight"/> and
/// handles the <see cref="BackwardHandles"/> of the model the weight belongs to (backward defers its result there).
/// </summary>
public sealed class FrozenMatMul : CachelessFunction<FrozenMatMul>
{
    public override string Name => nameof(FrozenMatMul);

    protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
    {
        var (x, weight, computeDType, handles) = ((Tensor)vars[0], (IQuantizedWeight)vars[1], (ScalarType)vars[2], (BackwardHandles)vars[3]);
        // Saved: a reference to the stored weight (already held by the module), the dtypes and the handle queue; no tensor.
        ctx.save_data("weight", weight);
        ctx.save_data("handles", handles);
        ctx.save_data("dtype", computeDType);
        ctx.save_data("inputDType", x.dtype);

        return Product(x, weight, computeDType);
    }

    /// <summary>
    /// y = x @ W^T through this function when autograd needs the graph (x requires grad and grad mode is on), else
    /// the same product with no autograd node: the checkpointed forward and inference run under no_grad, and a
    /// custom function's node costs the host more than the product's launch (TorchSharp builds it even then).
    /// </summary>
    public static Tensor Apply(Tensor x, IQuantizedWeight weight, ScalarType computeDType, BackwardHandles handles) =>
        KernelPath.NeedsGraph(x) ? Call(x, weight, computeDType, handles) : Product(x, weight, computeDType);

    /// <summary>Forward's arithmetic: the weight's own product, or the dense weight's (..., out) in the compute dtype.</summary>
    public static Tensor Product(Tensor x, IQuantizedWeight weight, ScalarType computeDType)
    {
        if (weight is IQuantizedMatMul own)                                        // int8 x int8, add/subtract ternary
        {
            using var scope = NewDisposeScope();
            return own.MatMul(x, computeDType).MoveToOuterDisposeScope();          // (..., out)
        }
        // No dispose scope of its own: the product lands in the caller's scope, the two temporaries are disposed here
        // (a scope and an alias per call cost host time that a 7B step pays 224 times in forward and recomputation).
        using var w = weight.Dequantize(computeDType);                             // (out, in)
        return DenseProduct(x, w, computeDType);
    }

    /// <summary>x @ w^T for a dense w (out, in) already in the compute dtype, x cast to it first.</summary>
    internal static Tensor DenseProduct(Tensor x, Tensor w, ScalarType computeDType)
    {
        if (x.dtype == computeDType) return nn.functional.linear(x, w);            // (..., out)
        using var xc = x.to(computeDType);
        return nn.functional.linear(xc, w);
    }

    protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
        BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

    List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var weight = (IQuantizedWeight)ctx.get_data("weight");
        var computeDType = (ScalarType)ctx.get_data("dtype");
        var inputDType = (ScalarType)ctx.get_data("inputDType");
        var handles = (BackwardHandles)ctx.get_data("handles");

        Tensor gradInput;
        using (var w = weight.Dequantize(computeDType))                            // (out, in)
        {
            // libtorch runs this on its device thread, outside any dispose scope: every temporary is disposed here.
            bool cast = gradOutput.dtype != computeDType;
            var g = cast ? gradOutput.to(computeDType) : gradOutput;
            gradInput = g.matmul(w);                                               // (..., in)
            if (cast) g.Dispose();
            if (gradInput.dtype != inputDType)
            {
                var inInputDType = gradInput.to(inputDType);
                gradInput.Dispose();
                gradInput = inInputDType;
            }
        }
        gradOutput.Dispose(); // TorchSharp's handle on the incoming gradient (see BackwardHandles)
        return [handles.Defer(gradInput), null!, null!, null!];
    }
}
