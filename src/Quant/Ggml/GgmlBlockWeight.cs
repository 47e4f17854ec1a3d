using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Ggml;

/// <summary>
/// A weight [out, in] quantized to a ggml block type (<see cref="GgmlBlockFormat"/>): each row of in_features
/// values is a run of blocks of 32, as in a GGUF file. Immutable value: <see cref="Quantize"/> makes it,
/// <see cref="Dequantize"/> is its inverse. The codes are stored as ggml stores them (q4_0: 16 bytes of nibbles a
/// block; q8_0: 32 int8), the scales as fp16, on the weight's device.
/// </summary>
/// <param name="Codes">q4_0: uint8 (nBlocks, 16), byte j = code j | code j+16 &lt;&lt; 4; q8_0: int8 (nBlocks, 32).</param>
/// <param name="Scales">fp16 (nBlocks, 1).</param>
/// <param name="DType">the dtype the weight was quantized from.</param>
public sealed record GgmlBlockWeight(GgmlBlockFormat Format, Tensor Codes, Tensor Scales, long[] Shape, ScalarType DType) : IQuantizedWeight
{
    /// <summary>Quantizes <paramref name="weight"/> [out, in] on its device; <paramref name="name"/> (the checkpoint
    /// key) labels the error when in_features is not a multiple of 32.</summary>
    public static GgmlBlockWeight Quantize(Tensor weight, GgmlBlockFormat format, string? name = null)
    {
        string what = name is null ? "weight" : $"tensor '{name}'";
        if (weight.dim() != 2)
            throw new ArgumentException($"cannot quantize {what} to {format}: expected a 2-D [out, in] weight, got [{string.Join(", ", weight.shape)}]");
        if (weight.shape[1] % format.BlockSize != 0)
            throw new ArgumentException($"cannot quantize {what} to {format}: its rows have {weight.shape[1]} values, not a multiple of ggml's {format.BlockSize}-value block; use {new GgmlBlockFormat(format.Type, F16Fallback: true)} to keep such weights in fp16 as GGUF export does");
        using var scope = NewDisposeScope();
        var blocks = weight.detach().reshape(-1, format.BlockSize);                      // (nBlocks, 32)
        Tensor scales, codes;
        if (format.Type == GgmlBlockType.Q4_0)
        {
            var (d, q) = Q4_0Blocks.Quantize(blocks);
            (scales, codes) = (d, Q4_0Blocks.Pack(q));
        }
        else
            (scales, codes) = Q8_0Blocks.Quantize(blocks);
        return new GgmlBlockWeight(format, codes.MoveToOuterDisposeScope(), scales.MoveToOuterDisposeScope(), weight.shape, weight.dtype);
    }

    public string FormatName => Format.ToString();

    /// <summary>Codes and fp16 scales: exactly the GGUF tensor's bytes.</summary>
    public long StorageBytes => Codes.numel() * Codes.element_size() + Scales.numel() * Scales.element_size();

    /// <summary>The dense [out, in] weight in <paramref name="dtype"/>, computed in fp32 as ggml dequantizes.</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var x = Format.Type == GgmlBlockType.Q4_0
            ? Q4_0Blocks.Dequantize(Scales, Q4_0Blocks.Unpack(Codes))
            : Q8_0Blocks.Dequantize(Scales, Codes);                                      // (nBlocks, 32) fp32
        return x.reshape(Shape).to(dtype).MoveToOuterDisposeScope();
    }
}
