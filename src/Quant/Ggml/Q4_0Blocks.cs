using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Ggml;

/// <summary>
/// ggml's Q4_0 block arithmetic (ggml-common.h block_q4_0; ggml-quants.c quantize_row_q4_0_ref), in torch ops on
/// any device: blocks of 32 weights, each an fp16 scale and 32 4-bit codes. The scale is d = m / -8 where m is the
/// block's value of largest magnitude (the first one on ties), keeping its sign: m itself maps to code 0 (= -8 after
/// the -8 offset) and the opposite side gets the finer steps up to +7. Codes q = min(15, trunc(x * (1/d) + 8.5)),
/// computed like the C code in fp32 from the fp32 d (not the stored fp16 one); x ≈ (q - 8) * fp16(d).
/// The one implementation: the q4_0 base format (<see cref="GgmlBlockWeight"/>) and GGUF export
/// (QLoraNet.Formats.GgufQ4_0) both call it, so a model loaded as q4_0 computes with the GGUF file's weights.
/// </summary>
public static class Q4_0Blocks
{
    public const int BlockSize = 32;

    /// <summary>Bytes of one block in ggml's layout: the fp16 scale and 16 bytes of nibbles (4.5 bits a weight).</summary>
    public const int BlockBytes = 2 + BlockSize / 2;

    /// <summary>(nBlocks, 32) any float dtype -> fp16 scales (nBlocks, 1) and uint8 codes 0..15 (nBlocks, 32).</summary>
    public static (Tensor Scales, Tensor Codes) Quantize(Tensor blocks)
    {
        using var scope = NewDisposeScope();
        var x = blocks.detach().to(ScalarType.Float32);                                  // (nBlocks, 32)
        var abs = x.abs();
        var first = abs.argmax(-1, keepdim: true);                                       // first index of the max |x|
        var amax = abs.gather(-1, first);                                                // (nBlocks, 1)
        // An all-zero block keeps m = +0.0 as in the C loop (which never takes an element when amax stays 0).
        var m = where(amax.gt(0), x.gather(-1, first), zeros_like(amax));
        var d = m / -8f;
        var id = where(d.ne(0), d.reciprocal(), zeros_like(d));
        var q = (x * id + 8.5f).trunc().clamp_max(15).to(ScalarType.Byte);              // (nBlocks, 32), 0..15
        return (d.to(ScalarType.Float16).MoveToOuterDisposeScope(), q.MoveToOuterDisposeScope());
    }

    /// <summary>Codes (nBlocks, 32) -> ggml's 16 bytes a block (nBlocks, 16): byte j holds code j in its low nibble and
    /// code j + 16 in its high nibble.</summary>
    public static Tensor Pack(Tensor codes)
    {
        using var scope = NewDisposeScope();
        return (codes[.., ..(BlockSize / 2)] + codes[.., (BlockSize / 2)..] * 16).to(ScalarType.Byte).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="Pack"/>: (nBlocks, 16) bytes -> (nBlocks, 32) codes.</summary>
    public static Tensor Unpack(Tensor packed)
    {
        using var scope = NewDisposeScope();
        var low = packed.bitwise_and(0x0F);
        var high = packed.bitwise_right_shift(4);
        return cat([low, high], 1).MoveToOuterDisposeScope();
    }

    /// <summary>x = (q - 8) * d in fp32 (nBlocks, 32), as ggml's dequantize_row_q4_0.</summary>
    public static Tensor Dequantize(Tensor scales, Tensor codes)
    {
        using var scope = NewDisposeScope();
        return ((codes.to(ScalarType.Float32) - 8f) * scales.to(ScalarType.Float32)).MoveToOuterDisposeScope();
    }
}
