using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>
/// A frozen bias-free linear whose weight is stored as GPTQ's packed tensors (<see cref="GptqWeight"/>), the base
/// peft's GPTQ path trains LoRA on. The tensors are buffers named as the checkpoint names them (qweight, qzeros,
/// scales, g_idx); forward runs <see cref="FrozenMatMul"/>, which dequantizes by torch ops on the weight's device
/// (no fused GPTQ kernel yet; <see cref="Kernels.KernelSelection"/> reports it).
/// </summary>
public sealed class GptqLinear : StoredWeightLinear<GptqWeight>
{
    // Buffers (field names are the buffer names).
    Tensor qweight;           // int32 (ceil(in*bits/32), out)
    Tensor qzeros;            // int32 (groups, ceil(out*bits/32))
    Tensor scales;            // fp16 (groups, out)
    Tensor g_idx;             // int32 (in)

    readonly GptqFormat spec;
    readonly int zeroOffset;
    readonly long[] shape;
    readonly ScalarType sourceDType;

    public GptqLinear(GptqWeight stored, ScalarType computeDType, string name = "GptqLinear")
        : base(name, stored.InFeatures, stored.OutFeatures, computeDType)
    {
        (spec, zeroOffset, shape, sourceDType) = (stored.Spec, stored.ZeroOffset, stored.Shape, stored.DType);
        (qweight, qzeros, scales, g_idx) = (stored.QWeight, stored.QZeros, stored.Scales, stored.GIdx);
        foreach (var t in new[] { qweight, qzeros, scales, g_idx })
            t.DetachFromDisposeScope(); // the module owns its buffers from here
        AdoptDeviceOf(qweight);
        RegisterComponents();
    }

    /// <summary>The stored weight as a value, rebuilt from the current buffers (they change identity on .to()).</summary>
    public override GptqWeight Stored => new(spec, qweight, qzeros, scales, g_idx, zeroOffset, shape, sourceDType);

    public override string FormatName => spec.ToString();
}
