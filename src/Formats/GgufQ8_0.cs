using QLoraNet.Quant.Ggml;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// ggml's Q8_0 (ggml-common.h block_q8_0; ggml-quants.c quantize_row_q8_0_ref): blocks of 32 weights, each stored
/// as an fp16 scale d = amax / 127 followed by 32 int8 values q = roundf(x * (1/d)), so x ≈ q * d.
/// Two paths with byte-identical results: <see cref="Quantize"/> on tensors (<see cref="Q8_0Blocks"/>, the
/// arithmetic the q8_0 base format shares) and <see cref="QuantizeReference"/>, a per-element transcription of the ggml reference that
/// the tests hold it to. Both compute in float32 like the C code: d in float32, the reciprocal 1/d, one multiply.
/// </summary>
public static class GgufQ8_0
{
    public const int BlockSize = Q8_0Blocks.BlockSize;
    public const int BlockBytes = Q8_0Blocks.BlockBytes;

    /// <summary>Quantizes a tensor whose last dim is a multiple of 32 (any float dtype, any device) with the block
    /// arithmetic the q8_0 base format uses (<see cref="Q8_0Blocks"/>).</summary>
    public static GgmlBlocks Quantize(Tensor x)
    {
        GgmlBlocks.RequireWholeBlocks(x.shape, BlockSize);
        using (NewDisposeScope())
        {
            var (d, q) = Q8_0Blocks.Quantize(x.detach().cpu().reshape(-1, BlockSize));    // (nBlocks, 1) fp16, (nBlocks, 32) int8
            return GgmlBlocks.FromParts(GgmlType.Q8_0, x.shape, d, q, BlockSize);
        }
    }

    /// <summary>Per-element reference: quantize_row_q8_0_ref over <paramref name="x"/> (a multiple of 32 values).</summary>
    public static byte[] QuantizeReference(ReadOnlySpan<float> x)
    {
        if (x.Length % BlockSize != 0) throw new ArgumentException($"Q8_0 needs a multiple of {BlockSize} values, not {x.Length}");
        var y = new byte[x.Length / BlockSize * BlockBytes];
        for (int b = 0; b < x.Length / BlockSize; b++)
        {
            var block = x.Slice(b * BlockSize, BlockSize);
            float amax = 0f;
            foreach (float v in block) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127f;
            float id = d != 0f ? 1f / d : 0f;
            BitConverter.TryWriteBytes(y.AsSpan(b * BlockBytes, 2), (Half)d);
            for (int j = 0; j < BlockSize; j++)
                y[b * BlockBytes + 2 + j] = (byte)(sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero);
        }
        return y;
    }

    /// <summary>The inverse: x = q * d, as float32 of the blocks' shape.</summary>
    public static Tensor Dequantize(GgmlBlocks blocks)
    {
        if (blocks.Type != GgmlType.Q8_0) throw new ArgumentException($"expected Q8_0 blocks, got {blocks.Type}");
        var bytes = blocks.Bytes.Span;
        var x = new float[blocks.NumElements];
        for (long b = 0; b < blocks.BlockCount; b++)
        {
            int o = checked((int)(b * BlockBytes));
            float d = (float)BitConverter.ToHalf(bytes.Slice(o, 2));
            for (int j = 0; j < BlockSize; j++) x[b * BlockSize + j] = (sbyte)bytes[o + 2 + j] * d;
        }
        return tensor(x).reshape(blocks.Shape);
    }
}
