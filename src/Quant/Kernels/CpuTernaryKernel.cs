using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The ternary product on the CPU with additions and subtractions only (BitNet b1.58's point: "the matrix
/// multiplication ... only involves integer addition"): for int8 activation codes A [n, k] and packed ternary
/// weights P [m/4, k] (Hugging Face's BitNet layout, <see cref="TernaryWeight"/>),
/// <code>
///   C[t, o] = sum over i with w[o, i] = +1 of A[t, i]  -  sum over i with w[o, i] = -1 of A[t, i]      int32
/// </code>
/// 32 inputs at a time (Vector256, SIMD where the CPU has it): the 2-bit codes of one byte row are compared with
/// "+1" and "-1" to give byte masks, the masked activation codes are added or subtracted in 16-bit lanes (at most
/// 64 steps of |a| &lt;= 128 before they are widened into the int32 total), so the sums are exact and equal to any
/// other exact integer product (tests hold it to the dequantize-then-matmul reference). Packed rows are spread over
/// the cores.
/// </summary>
static unsafe class CpuTernaryKernel
{
    /// <summary>Steps of 32 inputs summed in 16-bit lanes before widening: 2 codes of |a| &lt;= 128 per lane per step,
    /// 64 steps = 16384 &lt; 32767.</summary>
    const int StepsPerFlush = 64;

    /// <summary>int32 [n, m] from contiguous CPU int8 codes [n, k] and uint8 packed weights [m/4, k].</summary>
    public static Tensor Multiply(Tensor codes, Tensor packed)
    {
        long n = codes.shape[0], k = codes.shape[1], quarter = packed.shape[0], m = 4 * quarter;
        var output = empty([n, m], ScalarType.Int32);
        nint a = Address(codes), p = Address(packed), c = Address(output);
        Parallel.For(0, quarter, r =>
        {
            var sums = stackalloc int[4];
            for (long t = 0; t < n; t++)
            {
                RowTimesFour((sbyte*)a + t * k, (byte*)p + r * k, k, sums);
                int* outRow = (int*)c + t * m;
                for (int j = 0; j < 4; j++) outRow[j * quarter + r] = sums[j];
            }
        });
        return output;
    }

    /// <summary>The four dot products of one activation row with the four weight rows packed into byte row <paramref name="packedRow"/>.</summary>
    static void RowTimesFour(sbyte* activations, byte* packedRow, long k, int* sums)
    {
        for (int j = 0; j < 4; j++) sums[j] = 0;
        long i = 0;
        var three = Vector256.Create((byte)3);
        var plusCode = Vector256.Create((byte)2);   // ternary +1 is stored as 2
        var minusCode = Vector256<byte>.Zero;       // ternary -1 is stored as 0
        while (i + 32 <= k)
        {
            var acc0 = Vector256<short>.Zero;
            var acc1 = Vector256<short>.Zero;
            var acc2 = Vector256<short>.Zero;
            var acc3 = Vector256<short>.Zero;
            for (int step = 0; step < StepsPerFlush && i + 32 <= k; step++, i += 32)
            {
                var x = Vector256.Load(activations + i);
                var bytes = Vector256.Load(packedRow + i);
                acc0 += Signed(x, bytes & three, plusCode, minusCode);
                acc1 += Signed(x, Vector256.ShiftRightLogical(bytes, 2) & three, plusCode, minusCode);
                acc2 += Signed(x, Vector256.ShiftRightLogical(bytes, 4) & three, plusCode, minusCode);
                acc3 += Signed(x, Vector256.ShiftRightLogical(bytes, 6), plusCode, minusCode);
            }
            sums[0] += Total(acc0);
            sums[1] += Total(acc1);
            sums[2] += Total(acc2);
            sums[3] += Total(acc3);
        }
        for (; i < k; i++)
        {
            int x = activations[i];
            byte b = packedRow[i];
            for (int j = 0; j < 4; j++)
            {
                int code = (b >> (2 * j)) & 3;
                sums[j] += code == 2 ? x : code == 0 ? -x : 0;
            }
        }
    }

    /// <summary>(x where code = +1) - (x where code = -1), pairwise added into 16 lanes of 16 bits.</summary>
    static Vector256<short> Signed(Vector256<sbyte> x, Vector256<byte> code, Vector256<byte> plusCode, Vector256<byte> minusCode)
    {
        var plus = x & Vector256.Equals(code, plusCode).AsSByte();
        var minus = x & Vector256.Equals(code, minusCode).AsSByte();
        // Widen before subtracting: -(-128) does not fit a byte.
        var (plusLow, plusHigh) = Vector256.Widen(plus);
        var (minusLow, minusHigh) = Vector256.Widen(minus);
        return (plusLow - minusLow) + (plusHigh - minusHigh);
    }

    static int Total(Vector256<short> v)
    {
        var (low, high) = Vector256.Widen(v);
        return Vector256.Sum(low + high);
    }

    static nint Address(Tensor t)
    {
        fixed (byte* p = t.bytes) return (nint)p; // native memory: it does not move
    }
}
