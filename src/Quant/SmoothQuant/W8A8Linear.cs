using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// A frozen linear in W8A8 (SmoothQuant's inference form): int8 weight per output channel (<see cref="W8A8Weight"/>),
/// and per forward the activation quantized per token to int8 (dynamic: s_t = max(max_j |x_tj|, 1e-5) / 127), an exact
/// int8 x int8 -> int32 product, and y = acc · s_t · s_o in fp32, cast to the compute dtype (<see cref="W8A8Weight.MatMul"/>,
/// run by <see cref="FrozenMatMul"/>). Backward (LoRA on a W8A8 base) treats the activation rounding as the identity
/// (straight-through) and returns dx = dy · dequant(W), no weight gradient. Buffers: weight (int8), weight_scale (fp32).
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
}
