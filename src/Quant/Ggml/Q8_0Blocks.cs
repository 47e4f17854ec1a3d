using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Ggml;

/// <summary>
/// ggml's Q8_0 block arithmetic (ggml-common.h block_q8_0; ggml-quants.c quantize_row_q8_0_ref), in torch ops on
/// any device: blocks of 32 weights, each an fp16 scale d = amax / 127 and 32 int8 codes q = roundf(x * (1/d)),
/// computed like the C code in fp32 (d in fp32, its reciprocal, one multiply); x ≈ q * fp16(d).
/// The one implementation: the q8_0 base format (<see cref="GgmlBlockWeight"/>) and GGUF export
/// (QLoraNet.Formats.GgufQ8_0) both call it.
/// </summary>
public static class Q8_0Blocks
{
    public const int BlockSize = 32;

    /// <summary>Bytes of one block in ggml's layout: the fp16 scale and 32 int8 codes (8.5 bits a weight).</summary>
    public const int BlockBytes = 2 + BlockSize;

    /// <summary>(nBlocks, 32) any float dtype -> fp16 scales (nBlocks, 1) and int8 codes (nBlocks, 32).</summary>
    public static (Tensor Scales, Tensor Codes) Quantize(Tensor blocks)
    {
        using var scope = NewDisposeScope();
        var x = blocks.detach().to(ScalarType.Float32);                                  // (nBlocks, 32)
        var d = x.abs().amax(new long[] { -1 }, keepdim: true) / 127f;                   // (nBlocks, 1)
        var id = where(d.ne(0), d.reciprocal(), zeros_like(d));
        var q = RoundHalfAwayFromZero(x * id).to(ScalarType.Int8);                       // (nBlocks, 32)
        return (d.to(ScalarType.Float16).MoveToOuterDisposeScope(), q.MoveToOuterDisposeScope());
    }

    /// <summary>x = q * d in fp32 (nBlocks, 32), as ggml's dequantize_row_q8_0.</summary>
    public static Tensor Dequantize(Tensor scales, Tensor codes)
    {
        using var scope = NewDisposeScope();
        return (codes.to(ScalarType.Float32) * scales.to(ScalarType.Float32)).MoveToOuterDisposeScope();
    }

    /// <summary>C's roundf (halves away from zero; torch.round rounds halves to even). v - trunc(v) is exact in fp32.</summary>
    static Tensor RoundHalfAwayFromZero(Tensor v)
    {
        var t = v.trunc();
        return t + v.sign() * (v - t).abs().ge(0.5f).to(v.dtype);
    }
}
