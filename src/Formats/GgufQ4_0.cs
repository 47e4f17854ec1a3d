using QLoraNet.Quant.Ggml;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// ggml's Q4_0 in a GGUF file (ggml-common.h block_q4_0; ggml-quants.c quantize_row_q4_0_ref): blocks of 32 weights,
/// each stored as an fp16 scale then 16 bytes of 4-bit codes; the arithmetic (scale d = m / -8 from the value of
/// largest magnitude, codes q = min(15, trunc(x / d + 8.5)), x ≈ (q - 8) * d) is <see cref="Q4_0Blocks"/>'s.
/// Byte j of a block holds value j in its low nibble and value j + 16 in its high nibble.
/// <see cref="Quantize"/> (torch ops) and <see cref="QuantizeReference"/> (per element) give identical bytes.
/// </summary>
public static class GgufQ4_0
{
    public const int BlockSize = Q4_0Blocks.BlockSize;
    public const int BlockBytes = Q4_0Blocks.BlockBytes;

    /// <summary>Quantizes a tensor whose last dim is a multiple of 32 (any float dtype, any device) with the block
    /// arithmetic the q4_0 base format uses (<see cref="Q4_0Blocks"/>), so a model loaded as q4_0 holds these weights.</summary>
    public static GgmlBlocks Quantize(Tensor x)
    {
        GgmlBlocks.RequireWholeBlocks(x.shape, BlockSize);
        using (NewDisposeScope())
        {
            var (d, q) = Q4_0Blocks.Quantize(x.detach().cpu().reshape(-1, BlockSize));    // (nBlocks, 1) fp16, (nBlocks, 32)
            return GgmlBlocks.FromParts(GgmlType.Q4_0, x.shape, d, Q4_0Blocks.Pack(q), BlockSize / 2);
        }
    }

    /// <summary>Per-element reference: quantize_row_q4_0_ref over <paramref name="x"/> (a multiple of 32 values).</summary>
    public static byte[] QuantizeReference(ReadOnlySpan<float> x)
    {
        if (x.Length % BlockSize != 0) throw new ArgumentException($"Q4_0 needs a multiple of {BlockSize} values, not {x.Length}");
        var y = new byte[x.Length / BlockSize * BlockBytes];
        for (int b = 0; b < x.Length / BlockSize; b++)
        {
            var block = x.Slice(b * BlockSize, BlockSize);
            float amax = 0f, max = 0f;
            foreach (float v in block)
                if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
            float d = max / -8f;
            float id = d != 0f ? 1f / d : 0f;
            BitConverter.TryWriteBytes(y.AsSpan(b * BlockBytes, 2), (Half)d);
            for (int j = 0; j < BlockSize / 2; j++)
            {
                int lo = Math.Min(15, (int)(sbyte)(block[j] * id + 8.5f));
                int hi = Math.Min(15, (int)(sbyte)(block[j + BlockSize / 2] * id + 8.5f));
                y[b * BlockBytes + 2 + j] = (byte)(lo | (hi << 4));
            }
        }
        return y;
    }

    /// <summary>The inverse: x = (q - 8) * d, as float32 of the blocks' shape.</summary>
    public static Tensor Dequantize(GgmlBlocks blocks)
    {
        if (blocks.Type != GgmlType.Q4_0) throw new ArgumentException($"expected Q4_0 blocks, got {blocks.Type}");
        var bytes = blocks.Bytes.Span;
        var x = new float[blocks.NumElements];
        for (long b = 0; b < blocks.BlockCount; b++)
        {
            int o = checked((int)(b * BlockBytes));
            float d = (float)BitConverter.ToHalf(bytes.Slice(o, 2));
            for (int j = 0; j < BlockSize / 2; j++)
            {
                x[b * BlockSize + j] = ((bytes[o + 2 + j] & 0x0F) - 8) * d;
                x[b * BlockSize + j + BlockSize / 2] = ((bytes[o + 2 + j] >> 4) - 8) * d;
            }
        }
        return tensor(x).reshape(blocks.Shape);
    }
}
