using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// A tensor quantized to a ggml block type, exactly as its bytes go into a GGUF file: each row of
/// <see cref="Shape"/> (torch order; the last dim is the row) is a run of blocks of 32 values.
/// An immutable value: <see cref="GgufQ8_0"/> and <see cref="GgufQ4_0"/> make it and turn it back into floats.
/// </summary>
public sealed record GgmlBlocks(GgmlType Type, long[] Shape, ReadOnlyMemory<byte> Bytes)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    public long BlockCount => NumElements / GgmlTypes.BlockSize(Type);

    /// <summary>
    /// Assembles ggml's block layout from the two parts the tensor paths compute separately: block i is the two
    /// bytes of fp16 scale i, then its <paramref name="payloadBytes"/> bytes of codes.
    /// </summary>
    internal static GgmlBlocks FromParts(GgmlType type, long[] shape, Tensor scalesFp16, Tensor payload, int payloadBytes)
    {
        var scales = CpuBytes(scalesFp16);
        var codes = CpuBytes(payload);
        int n = scales.Length / 2;
        var y = new byte[(long)n * (2 + payloadBytes)];
        for (int b = 0; b < n; b++)
        {
            int o = b * (2 + payloadBytes);
            (y[o], y[o + 1]) = (scales[2 * b], scales[2 * b + 1]);
            Buffer.BlockCopy(codes, b * payloadBytes, y, o + 2, payloadBytes);
        }
        return new GgmlBlocks(type, shape, y);
    }

    internal static void RequireWholeBlocks(long[] shape, int blockSize)
    {
        long row = shape.Length == 0 ? 1 : shape[^1];
        if (row % blockSize != 0) throw new ArgumentException($"rows of {row} values are not a multiple of the {blockSize}-value block");
    }

    static byte[] CpuBytes(Tensor t)
    {
        using var c = t.cpu().contiguous();
        var result = new byte[c.numel() * c.element_size()];
        long at = 0;
        NativeTensorMemory.ForEachChunk(c, chunk => { chunk.CopyTo(result.AsSpan(checked((int)at))); at += chunk.Length; });
        return result;
    }
}
