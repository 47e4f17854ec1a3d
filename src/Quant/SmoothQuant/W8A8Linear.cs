using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// A frozen linear in W8A8 (SmoothQuant's inference form): int8 weight per output channel (<see cref="W8A8Weight"/>),
/// and per forward the activation quantized per token to int8 (dynamic: s_t = max(max_j |x_tj|, 1e-5) / 127), an exact
/// int8 x int8 -> int32 product (<see cref="Int8MatMul"/>), and y = acc · s_t · s_o in fp32, cast to the compute
/// dtype. Backward (LoRA on a W8A8 base) treats the activation rounding as the identity (straight-through) and
/// returns dx = dy · dequant(W), no weight gradient. Buffers: weight (int8), weight_scale (fp32).
/// </summary>
public sealed class W8A8Linear : StoredWeightLinear<W8A8Weight>
{
    // Buffers (field names are the buffer names).
    Tensor weight;            // int8 (out, in)
    Tensor weight_scale;      // fp32 (out)

    readonly long[] shape;
    readonly ScalarType sourceDType;
    readonly string formatName;

    public W8A8Linear(W8A8Weight stored, ScalarType computeDType, string formatName = "smoothquant", string name = "W8A8Linear")
        : base(name, stored.InFeatures, stored.OutFeatures, computeDType)
    {
        (shape, sourceDType, this.formatName) = (stored.Shape, stored.DType, formatName);
        (weight, weight_scale) = (stored.Codes, stored.Scales);
        weight.DetachFromDisposeScope();
        weight_scale.DetachFromDisposeScope();
        AdoptDeviceOf(weight);
        RegisterComponents();
    }

    public override W8A8Weight Stored => new(weight, weight_scale, shape, sourceDType);

    public override string FormatName => formatName;

    /// <summary>x (..., in) -> (..., out) in the compute dtype.</summary>
    public override Tensor forward(Tensor x) => W8A8MatMul.apply(x, Stored, ComputeDType, BackwardHandles);

    /// <summary>The int8 forward as a custom autograd function (see the class summary).</summary>
    sealed class W8A8MatMul : autograd.SingleTensorFunction<W8A8MatMul>
    {
        public override string Name => nameof(W8A8MatMul);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (x, w, computeDType, handles) = ((Tensor)vars[0], (W8A8Weight)vars[1], (ScalarType)vars[2], (BackwardHandles)vars[3]);
            ctx.save_data("weight", w);
            ctx.save_data("handles", handles);
            ctx.save_data("dtype", computeDType);
            ctx.save_data("inputDType", x.dtype);
            using var scope = NewDisposeScope();
            var rows = x.reshape(-1, x.shape[^1]).to(ScalarType.Float32);                 // (tokens, in)
            var (xq, xs) = W8A8Weight.RowwiseInt8(rows);                                  // per-token int8, (tokens, 1)
            var acc = Int8MatMul.MatMulTransposed(xq, w.Codes);                           // (tokens, out) int32
            var y = acc.to(ScalarType.Float32).mul_(xs).mul_(w.Scales.unsqueeze(0));
            var outShape = x.shape.ToArray();
            outShape[^1] = w.OutFeatures;
            return y.reshape(outShape).to(computeDType).MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var w = (W8A8Weight)ctx.get_data("weight");
            var computeDType = (ScalarType)ctx.get_data("dtype");
            var inputDType = (ScalarType)ctx.get_data("inputDType");
            var handles = (BackwardHandles)ctx.get_data("handles");
            Tensor gradInput;
            using (var scope = NewDisposeScope())
                gradInput = gradOutput.to(computeDType).matmul(w.Dequantize(computeDType)).to(inputDType).MoveToOuterDisposeScope();
            gradOutput.Dispose();
            return [handles.Defer(gradInput), null!, null!, null!];
        }
    }
}
