using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Gptq;

/// <summary>
/// GPTQ's packing of unsigned <c>bits</c>-bit codes into int32 words (AutoGPTQ <c>QuantLinear.pack</c>, the format
/// every GPTQ checkpoint on the hub uses): along one axis, the codes form a little-endian bit stream, code i taking
/// stream bits [i·bits, (i+1)·bits), word k holding stream bits [32k, 32k + 32), least significant bit first. For 2, 4
/// and 8 bits that is "code j of a word at bit bits·j" (8, 4 or 2... codes per word); for 3 bits 32 codes fill three
/// words and codes 10 and 21 straddle a word boundary, exactly as AutoGPTQ's 3-bit branch writes them.
/// <c>qweight</c> packs along in_features (rows of W^T), <c>qzeros</c> along out_features (its columns). Words are
/// stored as int32 (two's complement of the 32-bit pattern). A stream that does not fill its last word is padded
/// with zero bits (AutoGPTQ's checkpoints always fill it: sizes are multiples of 32; see <see cref="GptqLayout"/>).
/// </summary>
public static class GptqPacking
{
    /// <summary>Words holding <paramref name="count"/> codes of <paramref name="bits"/> bits: ceil(count·bits / 32).</summary>
    public static long Words(long count, int bits) => (count * bits + 31) / 32;

    /// <summary>codes (n, c), integers in [0, 2^bits), any integer dtype -> (ceil(n·bits/32), c) int32, packed along dim 0.</summary>
    public static Tensor PackRows(Tensor codes, int bits)
    {
        RequireBits(bits);
        using var scope = NewDisposeScope();
        long n = codes.shape[0], c = codes.shape[1];
        var (periodCodes, periodWords) = Period(bits);
        long periods = (n + periodCodes - 1) / periodCodes;
        var v = codes.to(ScalarType.Int64);
        if (periods * periodCodes != n) v = nn.functional.pad(v, [0, 0, 0, periods * periodCodes - n]);
        v = v.view(periods, periodCodes, c);                                             // (P, codes, c)
        var words = zeros(periods, periodWords, c, ScalarType.Int64, codes.device);       // (P, words, c)
        for (int j = 0; j < periodCodes; j++)
        {
            int bit = j * bits, w = bit / 32, shift = bit % 32;
            var code = v.select(1, j);                                                    // (P, c)
            // Low part into word w (bits beyond 32 fall off at the final wrap), high part into word w + 1.
            words.select(1, w).add_(code * (1L << shift));
            if (shift + bits > 32) words.select(1, w + 1).add_(code.div(1L << (32 - shift), rounding_mode: RoundingMode.floor));
        }
        // Keep the low 32 bits of each word, then read them as a signed int32.
        words = words.remainder(1L << 32);
        words = where(words.ge(1L << 31), words - (1L << 32), words);
        return words.view(periods * periodWords, c).narrow(0, 0, Words(n, bits)).to(ScalarType.Int32).MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="PackRows"/>: words (ceil(n·bits/32), c) int32 -> codes (n, c) int32 in [0, 2^bits).</summary>
    public static Tensor UnpackRows(Tensor words, int bits, long n)
    {
        RequireBits(bits);
        using var scope = NewDisposeScope();
        long c = words.shape[1];
        var (periodCodes, periodWords) = Period(bits);
        long periods = (n + periodCodes - 1) / periodCodes;
        var u = words.to(ScalarType.Int64).remainder(1L << 32);                           // the unsigned 32-bit pattern
        if (periods * periodWords != u.shape[0]) u = nn.functional.pad(u, [0, 0, 0, periods * periodWords - u.shape[0]]);
        u = u.view(periods, periodWords, c);
        long mask = (1L << bits) - 1;
        var codes = new Tensor[periodCodes];
        for (int j = 0; j < periodCodes; j++)
        {
            int bit = j * bits, w = bit / 32, shift = bit % 32;
            var code = u.select(1, w).div(1L << shift, rounding_mode: RoundingMode.floor);
            if (shift + bits > 32) code = code + u.select(1, w + 1) * (1L << (32 - shift));
            codes[j] = code.remainder(mask + 1);                                          // (P, c)
        }
        return stack(codes, 1).view(periods * periodCodes, c).narrow(0, 0, n).to(ScalarType.Int32).MoveToOuterDisposeScope();
    }

    /// <summary>codes (r, n) packed along dim 1 (qzeros): (r, ceil(n·bits/32)).</summary>
    public static Tensor PackColumns(Tensor codes, int bits)
    {
        using var scope = NewDisposeScope();
        return PackRows(codes.t(), bits).t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The inverse of <see cref="PackColumns"/>: (r, words) -> (r, n) int32.</summary>
    public static Tensor UnpackColumns(Tensor words, int bits, long n)
    {
        using var scope = NewDisposeScope();
        return UnpackRows(words.t(), bits, n).t().contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The shortest run of codes that fills whole words: 32 codes in 3 words for 3 bits, one word otherwise.</summary>
    static (int Codes, int Words) Period(int bits) => bits == 3 ? (32, 3) : (32 / bits, 1);

    static void RequireBits(int bits)
    {
        if (bits is not (2 or 3 or 4 or 8)) throw new ArgumentException($"GPTQ packs 2, 3, 4 or 8-bit codes, not {bits}");
    }
}
