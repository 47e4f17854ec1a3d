using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// Exact storage of a [rows, cols] weight in the quantized formats, as the modules hold it (codes + scales + zero
/// points / nested scales + offset; shared code tables not counted): the arithmetic behind
/// <see cref="BaseFormat.StorageBytes"/>, for `inspect` and memory estimates without quantizing.
/// NF4 with double quantization at 64/256: 4 + 8/64 + 32/(64*256) = 4.127 bits per weight (QLoRA section 3).
/// </summary>
public static class QuantSizes
{
    /// <summary>ceil(n/2) packed bytes + per block 4 bytes, or 1 byte plus 4 per nested block and a 4-byte offset.</summary>
    public static long FourBitBytes(long numel, int blockSize, bool doubleQuant,
        int nestedBlockSize = DoubleQuantizedScales.DefaultNestedBlockSize)
    {
        long blocks = QuantInputChecks.CeilDiv(numel, blockSize);
        long scales = doubleQuant ? blocks + 4 * QuantInputChecks.CeilDiv(blocks, nestedBlockSize) + 4 : 4 * blocks;
        return QuantInputChecks.CeilDiv(numel, 2) + scales;
    }

    /// <summary>Codes (1 byte, or half a byte for int4) + 4 bytes of scale and, if asymmetric, 1 byte of zero point per group.</summary>
    public static long LinearQuantBytes(LinearQuantFormat spec, long rows, long cols)
    {
        long numel = rows * cols;
        long groups = spec.Granularity switch
        {
            QuantGranularity.PerTensor => 1,
            QuantGranularity.PerChannel => rows,
            _ => numel / spec.GroupSize,
        };
        long codes = spec.Bits <= 4 ? QuantInputChecks.CeilDiv(numel, 2) : numel;
        return codes + groups * (4 + (spec.Symmetric ? 0 : 1));
    }
}
