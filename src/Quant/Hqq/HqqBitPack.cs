using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// hqq's bit packing (hqq/core/bitpack.py) of a code matrix W_q [rows, group] (rows = groups of the flattened
/// weight, axis=1), which packs whole row blocks, not neighbouring codes:
/// <code>
///   8 bit  8bit_u8   uint8 [rows, g]          as is
///   4 bit  4bit_u8   uint8 [rows/2, g]        W_q[:s] &lt;&lt; 4 | W_q[s:]                          s = rows/2
///   2 bit  2bit_u8   uint8 [rows/4, g]        W_q[:s] &lt;&lt; 6 | W_q[s:2s] &lt;&lt; 4 | W_q[2s:3s] &lt;&lt; 2 | W_q[3s:]   s = rows/4
///   3 bit  3bit_32   int32 [ceil(rows/10), g] rows padded with zero codes to 10s, block j (j = 0..9) shifted by 27 - 3j
/// </code>
/// hqq itself cannot pack 4-bit codes of an odd row count or 2-bit codes of a row count not divisible by 4
/// (its halves would not line up), so neither can this: <see cref="RowsProblem"/>.
/// </summary>
public static class HqqBitPack
{
    /// <summary>hqq's name of the packing of <paramref name="bits"/> (the "packing" key of its state dict).</summary>
    public static string Packing(int bits) => bits switch { 8 => "8bit_u8", 4 => "4bit_u8", 3 => "3bit_32", 2 => "2bit_u8", _ => throw Unsupported(bits) };

    /// <summary>The dtype packed codes are held in: int32 for 3 bits, uint8 otherwise.</summary>
    public static ScalarType StorageDType(int bits) => bits == 3 ? ScalarType.Int32 : ScalarType.Byte;

    /// <summary>Rows of the packed matrix for <paramref name="rows"/> code rows.</summary>
    public static long PackedRows(int bits, long rows) => bits switch
    {
        8 => rows,
        4 => rows / 2,
        2 => rows / 4,
        3 => QuantInputChecks.CeilDiv(rows, 10),
        _ => throw Unsupported(bits),
    };

    /// <summary>Bytes of the packed codes.</summary>
    public static long PackedBytes(int bits, long rows, long group) =>
        bits == 3 ? 4 * QuantInputChecks.CeilDiv(rows, 10) * group : QuantInputChecks.CeilDiv(rows * bits, 8) * group;

    /// <summary>Why <paramref name="rows"/> code rows cannot be packed at <paramref name="bits"/>, or null.</summary>
    public static string? RowsProblem(int bits, long rows) => bits switch
    {
        4 when rows % 2 != 0 => $"{rows} groups is odd, and hqq packs 4-bit codes in two halves of the groups",
        2 when rows % 4 != 0 => $"{rows} groups is not a multiple of 4, and hqq packs 2-bit codes in four quarters of the groups",
        _ => null,
    };

    /// <summary>Codes [rows, g] (any dtype, values in [0, 2^bits)) -> the packed matrix.</summary>
    public static Tensor Pack(Tensor codes, int bits)
    {
        using var scope = NewDisposeScope();
        long rows = codes.shape[0];
        if (RowsProblem(bits, rows) is { } p) throw new ArgumentException(p);
        Tensor packed;
        if (bits == 3)
        {
            long step = QuantInputChecks.CeilDiv(rows, 10);
            var padded = nn.functional.pad(codes.to(ScalarType.Int32), [0, 0, 0, 10 * step - rows]);   // (10 step, g)
            packed = padded.narrow(0, 0, step).bitwise_left_shift(27);
            for (int j = 1; j < 10; j++)
                packed.bitwise_or_(padded.narrow(0, j * step, step).bitwise_left_shift(27 - 3 * j));
        }
        else
        {
            var u = codes.to(ScalarType.Byte);
            int blocks = 8 / bits;
            long step = rows / blocks;
            packed = u.narrow(0, 0, step).bitwise_left_shift(8 - bits);
            for (int j = 1; j < blocks; j++)
                packed.bitwise_or_(u.narrow(0, j * step, step).bitwise_left_shift(8 - bits * (j + 1)));
        }
        return packed.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The packed matrix -> fp32 codes [rows, g] (the first <paramref name="rows"/> of the unpacked blocks).</summary>
    public static Tensor Unpack(Tensor packed, int bits, long rows)
    {
        using var scope = NewDisposeScope();
        int blocks = bits == 3 ? 10 : 8 / bits;
        int mask = (1 << bits) - 1;
        var parts = Enumerable.Range(0, blocks)
            .Select(j => packed.bitwise_right_shift(bits == 3 ? 27 - 3 * j : 8 - bits * (j + 1)).bitwise_and(mask))
            .ToArray();
        var codes = cat(parts, 0).narrow(0, 0, rows).to(ScalarType.Float32);              // (rows, g)
        return codes.MoveToOuterDisposeScope();
    }

    static ArgumentException Unsupported(int bits) => new($"hqq packs 2, 3, 4 or 8 bits, not {bits}");
}
