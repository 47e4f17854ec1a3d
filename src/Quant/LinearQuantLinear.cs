using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen bias-free linear whose weight is stored in int8/int4 linear quantization (<see cref="LinearQuantWeight"/>);
/// codes, scales and zero points are buffers, forward runs <see cref="FrozenMatMul"/>.
/// </summary>
public sealed class LinearQuantLinear : StoredWeightLinear<LinearQuantWeight>
{
    // Buffers (field names are the buffer names).
    Tensor codes;             // int8 (numel), or uint8 (ceil(numel / 2)) packed int4
    Tensor scales;            // fp32 (groups)
    Tensor? zero_points;      // int8 (groups) when asymmetric

    readonly LinearQuantFormat spec;
    readonly long[] shape;
    readonly ScalarType sourceDType;

    public LinearQuantLinear(LinearQuantWeight stored, ScalarType computeDType, string name = "LinearQuantLinear")
        : base(name, stored.Shape[1], stored.Shape[0], computeDType)
    {
        spec = stored.Spec;
        shape = stored.Shape;
        sourceDType = stored.DType;
        codes = stored.Codes;
        scales = stored.Scales;
        zero_points = stored.ZeroPoints;
        foreach (var t in new[] { codes, scales, zero_points }.OfType<Tensor>())
            t.DetachFromDisposeScope(); // the module owns its buffers from here
        AdoptDeviceOf(codes);
        RegisterComponents();
    }

    public override LinearQuantWeight Stored => new(spec, codes, scales, zero_points, shape, sourceDType);

    public override string FormatName => spec.ToString();
}
