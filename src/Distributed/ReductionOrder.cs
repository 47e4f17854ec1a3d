using System.Numerics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// The loopback backend's arithmetic, fixed so that a test can reproduce it in one process: the sum over ranks is
/// taken in rank order, <c>((x0 + x1) + x2) + ...</c>, element by element. float32 and float64 add in their own
/// precision (IEEE addition, so the result equals torch's <c>x0.add(x1).add(x2)</c> bit for bit); bfloat16 and
/// float16 accumulate in float32 in the same order and round once to nearest-even at the end (so they equal
/// <c>x0.float().add(x1.float())....to(dtype)</c>). NCCL sums in its own ring/tree order and, for 16-bit types,
/// rounds at every step: its results agree to floating-point tolerance, not bit for bit.
/// </summary>
internal static class ReductionOrder
{
    /// <summary>Sums <paramref name="others"/> (ranks 1..N-1, in order) into <paramref name="acc"/> (rank 0's data), in place.</summary>
    public static void SumInto(Span<byte> acc, IReadOnlyList<byte[]> others, ScalarType dtype)
    {
        switch (dtype)
        {
            case ScalarType.Float32:
                foreach (var o in others) Add(MemoryMarshal.Cast<byte, float>(acc), MemoryMarshal.Cast<byte, float>(o.AsSpan()));
                break;
            case ScalarType.Float64:
                foreach (var o in others) Add(MemoryMarshal.Cast<byte, double>(acc), MemoryMarshal.Cast<byte, double>(o.AsSpan()));
                break;
            case ScalarType.BFloat16:
            case ScalarType.Float16:
            {
                bool bf = dtype == ScalarType.BFloat16;
                var a16 = MemoryMarshal.Cast<byte, ushort>(acc);
                var wide = new float[a16.Length];
                for (int i = 0; i < wide.Length; i++) wide[i] = bf ? FromBf16(a16[i]) : (float)BitConverter.UInt16BitsToHalf(a16[i]);
                foreach (var o in others)
                {
                    var x = MemoryMarshal.Cast<byte, ushort>(o.AsSpan());
                    for (int i = 0; i < wide.Length; i++) wide[i] += bf ? FromBf16(x[i]) : (float)BitConverter.UInt16BitsToHalf(x[i]);
                }
                for (int i = 0; i < wide.Length; i++) a16[i] = bf ? ToBf16(wide[i]) : BitConverter.HalfToUInt16Bits((Half)wide[i]);
                break;
            }
            default:
                throw new ArgumentException($"cannot sum {dtype}");
        }
    }

    static void Add<T>(Span<T> acc, ReadOnlySpan<T> x) where T : struct, INumber<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var va = MemoryMarshal.Cast<T, Vector<T>>(acc);
            var vx = MemoryMarshal.Cast<T, Vector<T>>(x);
            for (int v = 0; v < va.Length; v++) va[v] += vx[v];
            i = va.Length * Vector<T>.Count;
        }
        for (; i < acc.Length; i++) acc[i] += x[i];
    }

    static float FromBf16(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    /// <summary>float32 to bfloat16, round to nearest even (as c10::BFloat16); NaN stays a quiet NaN.</summary>
    static ushort ToBf16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
        return (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    }
}
