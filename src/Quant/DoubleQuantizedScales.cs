using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Double-quantized block scales (QLoRA section 3): the fp32 absmax values minus their mean (Offset) are quantized
/// blockwise, NestedBlockSize per block, to 8 bits with bitsandbytes' signed dynamic map (<see cref="DynamicMap"/>),
/// keeping one fp32 absmax per nested block. Cost per weight at blocksize 64 / 256: 8/64 + 32/(64*256) bits
/// instead of 32/64. Dequantized value of block i: map[Codes[i]] * NestedAbsmax[i / NestedBlockSize] + Offset,
/// in fp32, in that order (bitsandbytes' dequantize_blockwise, then `absmax += offset`).
/// </summary>
/// <param name="Codes">uint8 (nBlocks): `weight.absmax` in a bitsandbytes checkpoint.</param>
/// <param name="NestedAbsmax">fp32 (ceil(nBlocks / NestedBlockSize)): `weight.nested_absmax`.</param>
/// <param name="Offset">the mean that was subtracted: `nested_offset`.</param>
/// <param name="NestedBlockSize">`nested_blocksize`, 256 in bitsandbytes.</param>
public sealed record DoubleQuantizedScales(Tensor Codes, Tensor NestedAbsmax, float Offset, int NestedBlockSize) : BlockScales
{
    public const int DefaultNestedBlockSize = 256;

    public override long Count => Codes.shape[0];

    /// <summary>
    /// Quantizes fp32 scales (nBlocks). The mean is accumulated in float64 and rounded once to fp32, so the
    /// tensor path and the reference agree regardless of reduction order (bitsandbytes takes an fp32 mean; its
    /// offset can differ from ours in the last bit, which changes nothing about reading its checkpoints).
    /// </summary>
    public static DoubleQuantizedScales Quantize(Tensor absmax, int nestedBlockSize = DefaultNestedBlockSize)
    {
        QuantInputChecks.RequireBlockSize(nestedBlockSize, long.MaxValue, null, "nested blocksize");
        using var scope = NewDisposeScope();
        float offset = absmax.to(ScalarType.Float64).mean().to(ScalarType.Float32).item<float>();
        var centered = absmax - offset;                                           // (nBlocks)
        var (scaled, nestedAbsmax) = Blockwise.ScaleByAbsmax(Blockwise.ToBlocks(centered, nestedBlockSize));
        var thresholds = CodeTables.Float("dynamic/thresholds", absmax.device, DynamicMap.Thresholds);
        var codes = Blockwise.Encode(scaled, thresholds).view(-1).narrow(0, 0, absmax.shape[0]);
        return new DoubleQuantizedScales(codes.MoveToOuterDisposeScope(), nestedAbsmax.MoveToOuterDisposeScope(),
            offset, nestedBlockSize);
    }

    public override Tensor Dequantize()
    {
        using var scope = NewDisposeScope();
        var map = CodeTables.Float("dynamic/values", Codes.device, DynamicMap.Values);
        var values = map.index_select(0, Codes.to(ScalarType.Int64));            // (nBlocks)
        var scales = Blockwise.MultiplyByBlockScale(values, NestedAbsmax, NestedBlockSize, Count);
        return (scales + Offset).MoveToOuterDisposeScope();
    }

    /// <summary>One byte per block, 4 per nested block, 4 for the offset.</summary>
    public override long StorageBytes => Count + 4 * NestedAbsmax.shape[0] + 4;

    public override BlockScales To(Device device) => this with { Codes = Codes.to(device), NestedAbsmax = NestedAbsmax.to(device) };

    public override IEnumerable<Tensor> Tensors => [Codes, NestedAbsmax];
}
