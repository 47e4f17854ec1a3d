using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen linear on a tape (<see cref="LinearTape"/>): backward is dx = dy @ W with W the weight exactly as
/// <see cref="FrozenMatMul"/>'s backward makes it, either kept from the recomputation (one dequantization for both
/// passes, the dense weight held until this backward) or made again here. No weight gradient (QLoRA section 3).
/// </summary>
public sealed class FrozenLinearTape : LinearTape
{
    readonly IQuantizedWeight weight;
    readonly ScalarType computeDType;
    Tensor? dense;   // (out, in) in the compute dtype, or null until backward

    internal FrozenLinearTape(IQuantizedWeight weight, ScalarType computeDType, Tensor? output, Tensor? dense)
    {
        this.weight = weight;
        this.computeDType = computeDType;
        Output = output?.DetachFromDisposeScope();     // the tape owns them, whatever scope it is made in
        this.dense = dense?.DetachFromDisposeScope();
    }

    public override Tensor Backward(Tensor dy, Tensor? inputGrad)
    {
        using var scope = NewDisposeScope();
        var w = dense ?? weight.Dequantize(computeDType);                           // (out, in)
        var g = dy.dtype == computeDType ? dy : dy.to(computeDType);                // (..., out)
        Tensor result;
        if (inputGrad is null)
            result = g.matmul(w).MoveToOuterDisposeScope();                         // (..., in), as FrozenMatMul's backward
        else
        {
            // In place through a view: a non-contiguous gradient would be reshaped into a copy and the sum lost.
            if (!inputGrad.is_contiguous()) throw new ArgumentException("the input gradient to add into must be contiguous", nameof(inputGrad));
            // Accumulating inside the GEMM rounds the sum once, where autograd adds the rounded products.
            Rows(inputGrad).addmm_(Rows(g), w);
            result = inputGrad;
        }
        dense?.Dispose();
        dense = null;
        return result;
    }

    public override void Dispose()
    {
        dense?.Dispose();
        dense = null;
        base.Dispose();
    }
}
