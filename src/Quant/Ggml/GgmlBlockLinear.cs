using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Ggml;

/// <summary>
/// A frozen bias-free linear whose weight is stored in a ggml block type (<see cref="GgmlBlockWeight"/>); codes and
/// scales are buffers, forward runs <see cref="FrozenMatMul"/>, which dequantizes with torch ops on any device.
/// </summary>
public sealed class GgmlBlockLinear : StoredWeightLinear<GgmlBlockWeight>
{
    // Buffers (field names are the buffer names).
    Tensor codes;             // uint8 (nBlocks, 16) q4_0 nibbles, or int8 (nBlocks, 32) q8_0
    Tensor scales;            // fp16 (nBlocks, 1)

    readonly GgmlBlockFormat format;
    readonly long[] shape;
    readonly ScalarType sourceDType;

    public GgmlBlockLinear(GgmlBlockWeight stored, ScalarType computeDType, string name = "GgmlBlockLinear")
        : base(name, stored.Shape[1], stored.Shape[0], computeDType)
    {
        format = stored.Format;
        shape = stored.Shape;
        sourceDType = stored.DType;
        codes = stored.Codes.DetachFromDisposeScope();   // the module owns its buffers from here
        scales = stored.Scales.DetachFromDisposeScope();
        AdoptDeviceOf(codes);
        RegisterComponents();
    }

    public override GgmlBlockWeight Stored => new(format, codes, scales, shape, sourceDType);

    public override string FormatName => format.ToString();
}
