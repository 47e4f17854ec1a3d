using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Tensor-path helpers shared by the 4-bit and the nested 8-bit blockwise quantizers (bitsandbytes'
/// quantize_blockwise / quantize_4bit): cut a flat tensor into blocks, scale each by the reciprocal of its absmax.
/// </summary>
static class Blockwise
{
    /// <summary>(nBlocks, blockSize) view of a flat tensor, zero-padded at the end; zeros change no absmax.</summary>
    public static Tensor ToBlocks(Tensor flat, long blockSize)
    {
        long n = flat.shape[0];
        long padded = QuantInputChecks.CeilDiv(n, blockSize) * blockSize;
        var full = padded == n ? flat : nn.functional.pad(flat, [0, padded - n]);
        return full.view(-1, blockSize);
    }

    /// <summary>
    /// Per-block absmax (nBlocks) and the blocks multiplied by 1/absmax. Like bitsandbytes, the reciprocal is taken
    /// once per block and multiplied in (not a division per element), and an all-zero block is guarded by 1e-38.
    /// </summary>
    public static (Tensor Scaled, Tensor Absmax) ScaleByAbsmax(Tensor blocks)
    {
        var absmax = blocks.abs().amax([1]);                        // (nBlocks)
        var reciprocal = absmax.clamp_min(1e-38).reciprocal();      // (nBlocks)
        return (blocks * reciprocal.unsqueeze(1), absmax);          // (nBlocks, blockSize)
    }

    /// <summary>Code of every element: the number of thresholds strictly below it (ties take the lower code).</summary>
    public static Tensor Encode(Tensor scaled, Tensor thresholds) =>
        bucketize(scaled, thresholds, outInt32: true).to(ScalarType.Byte);

    /// <summary>values (nBlocks*blockSize or fewer) times their block's scale, cut back to n elements.</summary>
    public static Tensor MultiplyByBlockScale(Tensor values, Tensor scale, long blockSize, long n)
    {
        var blocks = ToBlocks(values, blockSize);                   // (nBlocks, blockSize)
        return (blocks * scale.unsqueeze(1)).view(-1).narrow(0, 0, n);
    }
}
