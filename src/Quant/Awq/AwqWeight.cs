using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Awq;

/// <summary>
/// A weight in AutoAWQ's GEMM layout (<c>WQLinear_GEMM</c>; <c>awq/utils/packing_utils.py</c>), W^T orientation:
/// <list type="bullet">
/// <item><c>qweight</c> int32 (in, out/8): the 4-bit codes of outputs 8c..8c+7 of input row i in word (i, c), the
/// code of output 8c + ORDER[k] in bits 4k..4k+3, ORDER = [0, 2, 4, 6, 1, 3, 5, 7] (the interleaving AWQ's GEMM
/// kernel dequantizes in)</item>
/// <item><c>qzeros</c> int32 (in/group, out/8): the zero points, packed the same way (stored as is, no offset)</item>
/// <item><c>scales</c> fp16 (in/group, out)</item>
/// </list>
/// Dequantized: W[o, i] = scales[i / group, o] · (q[i, o] - z[i / group, o]), in fp32.
/// </summary>
public sealed record AwqWeight(AwqFormat Spec, Tensor QWeight, Tensor QZeros, Tensor Scales, long[] Shape, ScalarType DType) : IQuantizedWeight
{
    /// <summary>AutoAWQ's AWQ_ORDER: nibble k of a word holds output ORDER[k] of its eight.</summary>
    public static readonly long[] Order = [0, 2, 4, 6, 1, 3, 5, 7];

    /// <summary>AWQ_REVERSE_ORDER: output j of a word's eight sits in nibble REVERSE[j].</summary>
    public static readonly long[] ReverseOrder = [0, 4, 1, 5, 2, 6, 3, 7];

    /// <summary>16^k: the value of one unit in nibble k.</summary>
    static readonly long[] NibbleWeights = [1, 16, 256, 4096, 65536, 1048576, 16777216, 268435456];

    public long OutFeatures => Shape[0];
    public long InFeatures => Shape[1];

    /// <summary>Packs codes (out, in) and zero points (out, groups) in [0, 15], scales (out, groups) stored as fp16.</summary>
    public static AwqWeight FromCodes(AwqFormat spec, Tensor codes, Tensor scales, Tensor zeros, ScalarType dtype)
    {
        long outFeatures = codes.shape[0];
        if (outFeatures % 8 != 0)
            throw new ArgumentException($"AWQ's GEMM layout packs 8 outputs per int32; out_features {outFeatures} is not a multiple of 8");
        using var scope = NewDisposeScope();
        var qweight = Pack(codes.t());                                                  // (in, out/8)
        var qzeros = Pack(zeros.t());                                                   // (groups, out/8)
        return new AwqWeight(spec, qweight.MoveToOuterDisposeScope(), qzeros.MoveToOuterDisposeScope(),
            scales.t().to(ScalarType.Float16).contiguous().MoveToOuterDisposeScope(), codes.shape, dtype);
    }

    /// <summary>(r, n) codes in [0, 15] -> (r, n/8) int32 in AWQ's interleaved nibble order.</summary>
    public static Tensor Pack(Tensor codes)
    {
        using var scope = NewDisposeScope();
        long r = codes.shape[0], n = codes.shape[1];
        var eight = codes.to(ScalarType.Int64).reshape(r, n / 8, 8)
            .index_select(2, tensor(Order, device: codes.device));                      // nibble k <- output ORDER[k]
        var shifts = tensor(NibbleWeights, device: codes.device);
        var words = (eight * shifts).sum([2]);                                          // (r, n/8), < 2^32
        words = where(words.ge(1L << 31), words - (1L << 32), words);
        return words.to(ScalarType.Int32).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="Pack"/>: (r, n/8) int32 -> (r, n) int32 codes in output order.</summary>
    public static Tensor Unpack(Tensor words)
    {
        using var scope = NewDisposeScope();
        long r = words.shape[0], c = words.shape[1];
        var u = words.to(ScalarType.Int64).remainder(1L << 32).unsqueeze(2);            // (r, c, 1) unsigned
        var shifts = tensor(NibbleWeights, device: words.device);
        var nibbles = u.div(shifts, rounding_mode: RoundingMode.floor).remainder(16);   // (r, c, 8), nibble k
        var ordered = nibbles.index_select(2, tensor(ReverseOrder, device: words.device)); // output j <- nibble REVERSE[j]
        return ordered.reshape(r, c * 8).to(ScalarType.Int32).MoveToOuterDisposeScope();
    }

    /// <summary>Codes (out, in) int32.</summary>
    public Tensor Codes()
    {
        using var scope = NewDisposeScope();
        return Unpack(QWeight).t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Zero points (out, groups) int32.</summary>
    public Tensor ZeroPoints()
    {
        using var scope = NewDisposeScope();
        return Unpack(QZeros).t().contiguous().MoveToOuterDisposeScope();
    }

    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long group = InFeatures / Scales.shape[0];
        var q = Unpack(QWeight);                                                        // (in, out)
        var z = Unpack(QZeros).repeat_interleave(group, 0);                             // (in, out)
        var s = Scales.to(ScalarType.Float32).repeat_interleave(group, 0);              // (in, out)
        var dense = (q - z).to(ScalarType.Float32).mul_(s);                            // W^T
        return dense.t().to(dtype).contiguous().MoveToOuterDisposeScope();
    }

    public Tensor Dequantize() => Dequantize(DType);

    public AwqWeight To(Device device) =>
        this with { QWeight = QWeight.to(device), QZeros = QZeros.to(device), Scales = Scales.to(device) };

    public long StorageBytes => 4 * (QWeight.numel() + QZeros.numel()) + 2 * Scales.numel();

    public string FormatName => Spec.ToString();
}
