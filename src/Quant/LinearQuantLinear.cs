using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen bias-free linear whose weight is stored in int8/int4 linear quantization (<see cref="LinearQuantWeight"/>);
/// codes, scales and zero points are buffers, forward runs <see cref="FrozenMatMul"/>.
/// </summary>
public sealed class LinearQuantLinear : FrozenLinear
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

    /// <summary>The stored weight as a value, rebuilt from the current buffers.</summary>
    public LinearQuantWeight Stored => new(spec, codes, scales, zero_points, shape, sourceDType);

    public override string FormatName => spec.ToString();

    public override long StorageBytes => Stored.StorageBytes;

    public override Tensor DequantizeWeight(ScalarType dtype) => Stored.Dequantize(dtype);

    /// <summary>x (..., in) -> (..., out) in the compute dtype.</summary>
    public override Tensor forward(Tensor x) => FrozenMatMul.apply(x, Stored, ComputeDType, BackwardHandles);
}
