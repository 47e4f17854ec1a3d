using System.Numerics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// The loopback backend's arithmetic, fixed so that a test can reproduce it in one process: the ranks' buffers are
/// added element by element along <see cref="PairwiseOrder"/>'s tree over the ranks (for up to three ranks the
/// rank order, <c>(x0 + x1) + x2</c>), the order the training step adds its micro-batches in, so W ranks add what one
/// process accumulating their micro-batches adds. float32 and float64 add in their own precision (IEEE addition,
/// so the result equals torch's <c>add</c> along the same tree bit for bit); bfloat16 and float16 accumulate in
/// float32 along the tree and round once to nearest-even at the end. NCCL sums in its own ring/tree order and, for
/// 16-bit types, rounds at every step: its results agree to floating-point tolerance, not bit for bit.
/// </summary>
internal static class ReductionOrder
{
    /// <summary>Sums the ranks' buffers (<paramref name="acc"/> is rank 0's, <paramref name="others"/> ranks
    /// 1..N-1 in order, overwritten as scratch) into <paramref name="acc"/>.</summary>
    public static void SumInto(Span<byte> acc, IReadOnlyList<byte[]> others, ScalarType dtype)
    {
        var terms = new List<byte[]> { acc.ToArray() };
        terms.AddRange(others);
        switch (dtype)
        {
            case ScalarType.Float32:
                PairwiseOrder.Sum(terms, (a, b) => { Add(MemoryMarshal.Cast<byte, float>(a.AsSpan()), MemoryMarshal.Cast<byte, float>(b.AsSpan())); return a; });
                terms[0].CopyTo(acc);
                break;
            case ScalarType.Float64:
                PairwiseOrder.Sum(terms, (a, b) => { Add(MemoryMarshal.Cast<byte, double>(a.AsSpan()), MemoryMarshal.Cast<byte, double>(b.AsSpan())); return a; });
                terms[0].CopyTo(acc);
                break;
            case ScalarType.BFloat16:
            case ScalarType.Float16:
            {
                bool bf = dtype == ScalarType.BFloat16;
                var wide = terms.Select(t =>
                {
                    var x = MemoryMarshal.Cast<byte, ushort>(t.AsSpan());
                    var w = new float[x.Length];
                    for (int i = 0; i < w.Length; i++) w[i] = bf ? FromBf16(x[i]) : (float)BitConverter.UInt16BitsToHalf(x[i]);
                    return w;
                }).ToList();
                var sum = PairwiseOrder.Sum(wide, (a, b) => { Add<float>(a, b); return a; });
                var a16 = MemoryMarshal.Cast<byte, ushort>(acc);
                for (int i = 0; i < sum.Length; i++) a16[i] = bf ? ToBf16(sum[i]) : BitConverter.HalfToUInt16Bits((Half)sum[i]);
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
