using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen bias-free linear in HQQ (<see cref="HqqFormat"/>): packed codes, fp16 scale and zero point are buffers;
/// forward runs <see cref="FrozenMatMul"/> (dequantize to the compute dtype, multiply, drop), as HQQLinear's PyTorch
/// backend does (HQQMatmulNoCacheDeq: matmul with dequantize(), and again in backward).
/// </summary>
public sealed class HqqLinear : StoredWeightLinear<HqqWeight>
{
    // Buffers (field names are the buffer names: hqq's own W_q, scale, zero).
    Tensor W_q;
    Tensor scale;
    Tensor zero;

    readonly HqqFormat spec;
    readonly long[] shape;
    readonly ScalarType sourceDType;

    public HqqLinear(HqqWeight stored, ScalarType computeDType, string name = "HqqLinear")
        : base(name, stored.Shape[1], stored.Shape[0], computeDType)
    {
        spec = stored.Spec;
        shape = stored.Shape;
        sourceDType = stored.DType;
        W_q = stored.Packed.DetachFromDisposeScope();   // the module owns its buffers from here
        scale = stored.Scale.DetachFromDisposeScope();
        zero = stored.Zero.DetachFromDisposeScope();
        AdoptDeviceOf(W_q);
        RegisterComponents();
    }

    public override HqqWeight Stored => new(spec, W_q, scale, zero, shape, sourceDType);

    public override string FormatName => spec.ToString();
}
