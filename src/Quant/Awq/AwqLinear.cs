using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Awq;

/// <summary>
/// A frozen bias-free linear whose weight is stored in AutoAWQ's GEMM layout (<see cref="AwqWeight"/>); buffers named
/// as the checkpoint names them (qweight, qzeros, scales); forward runs <see cref="FrozenMatMul"/>, which dequantizes
/// by torch ops on the weight's device (no fused AWQ kernel yet; <see cref="Kernels.KernelSelection"/> reports it).
/// </summary>
public sealed class AwqLinear : StoredWeightLinear<AwqWeight>
{
    // Buffers (field names are the buffer names).
    Tensor qweight;           // int32 (in, out/8)
    Tensor qzeros;            // int32 (groups, out/8)
    Tensor scales;            // fp16 (groups, out)

    readonly AwqFormat spec;
    readonly long[] shape;
    readonly ScalarType sourceDType;

    public AwqLinear(AwqWeight stored, ScalarType computeDType, string name = "AwqLinear")
        : base(name, stored.InFeatures, stored.OutFeatures, computeDType)
    {
        (spec, shape, sourceDType) = (stored.Spec, stored.Shape, stored.DType);
        (qweight, qzeros, scales) = (stored.QWeight, stored.QZeros, stored.Scales);
        foreach (var t in new[] { qweight, qzeros, scales })
            t.DetachFromDisposeScope(); // the module owns its buffers from here
        AdoptDeviceOf(qweight);
        RegisterComponents();
    }

    public override AwqWeight Stored => new(spec, qweight, qzeros, scales, shape, sourceDType);

    public override string FormatName => spec.ToString();
}
