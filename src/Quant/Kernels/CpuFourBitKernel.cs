using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The CPU fast paths of <see cref="FourBitWeight"/>. Quantize fuses absmax, scaling, encoding and packing into one
/// pass over each block, with SIMD compares against the thresholds (code = number of thresholds below the value);
/// libtorch's bucketize is a scalar binary search and dominated the tensor path (about 2.5 s of 3+ s for a
/// 4096 x 11008 weight on this project's 2-core CPU). Dequantize writes codebook[code] * absmax straight into the
/// output instead of the five full-size temporaries of the torch ops. Both use the reference's fp32 operations
/// (x * (1 / max(absmax, 1e-38)), strict compares, one multiply), so they are bit-identical to it; tests hold them so.
/// Blocks are spread over the cores.
/// </summary>
static unsafe class CpuFourBitKernel
{
    /// <summary>
    /// Quantizes a contiguous fp32 CPU tensor (length) whose length is a multiple of <paramref name="blockSize"/>
    /// except possibly for the final chunk. Returns packed codes (ceil(length / 2)) and absmax (blocks); a block
    /// holding NaN or Inf gets a NaN absmax, for the caller's finiteness check.
    /// </summary>
    public static (Tensor Packed, Tensor Absmax) Quantize(Tensor values, FourBitType type, int blockSize)
    {
        long n = values.shape[0];
        long blocks = QuantInputChecks.CeilDiv(n, blockSize);
        var packed = empty(QuantInputChecks.CeilDiv(n, 2), ScalarType.Byte);
        var absmax = empty(blocks, ScalarType.Float32);
        nint x = Address(values), p = Address(packed), a = Address(absmax);
        var thresholds = FourBitCodebook.Thresholds(type);
        var magnitudeCodes = type == FourBitType.Fp4 ? FourBitCodebook.Fp4MagnitudeCodes() : null;
        byte zeroCode = FourBitCodebook.Encode(type, 0f);

        long perTask = Math.Max(1, (1L << 16) / blockSize);
        Parallel.For(0, QuantInputChecks.CeilDiv(blocks, perTask), task =>
        {
            var codes = new byte[blockSize + 1];
            var counts = new int[blockSize];
            long end = Math.Min(blocks, (task + 1) * perTask);
            for (long b = task * perTask; b < end; b++)
            {
                long start = b * blockSize;
                int length = (int)Math.Min(blockSize, n - start);
                var block = new ReadOnlySpan<float>((float*)x + start, length);
                float max = AbsMax(block);
                ((float*)a)[b] = max;
                EncodeBlock(block, 1f / MathF.Max(max, 1e-38f), thresholds, magnitudeCodes, counts, codes);
                codes[length] = zeroCode; // an odd final block pads with the code of 0.0, as bitsandbytes does
                byte* outBytes = (byte*)p + start / 2;
                for (int k = 0; k < (length + 1) / 2; k++)
                    outBytes[k] = (byte)((codes[2 * k] << 4) | codes[2 * k + 1]);
            }
        });
        return (packed, absmax);
    }

    /// <summary>fp32 (n) from packed codes (ceil(n / 2)) and fp32 scales (ceil(n / blockSize)), contiguous CPU tensors.</summary>
    public static Tensor Dequantize(Tensor packed, Tensor absmax, FourBitType type, int blockSize, long n)
    {
        var output = empty(n, ScalarType.Float32);
        nint p = Address(packed), a = Address(absmax), o = Address(output);
        var values = FourBitCodebook.Values(type);
        long blocks = QuantInputChecks.CeilDiv(n, blockSize);
        long perTask = Math.Max(1, (1L << 16) / blockSize);
        Parallel.For(0, QuantInputChecks.CeilDiv(blocks, perTask), task =>
        {
            long end = Math.Min(blocks, (task + 1) * perTask);
            for (long b = task * perTask; b < end; b++)
            {
                float scale = ((float*)a)[b];
                long start = b * blockSize, stop = Math.Min(start + blockSize, n);
                for (long i = start; i < stop; i++)
                {
                    byte pair = ((byte*)p)[i / 2];
                    ((float*)o)[i] = values[(i & 1) == 0 ? pair >> 4 : pair & 0xF] * scale;
                }
            }
        });
        return output;
    }

    /// <summary>max |v| over the block; NaN when any value is NaN or Inf.</summary>
    static float AbsMax(ReadOnlySpan<float> block)
    {
        int w = Vector<float>.Count, i = 0;
        var maxV = Vector<float>.Zero;
        var finiteV = Vector<float>.Zero; // v * 0 is 0 for finite v, NaN for NaN and Inf
        for (; i + w <= block.Length; i += w)
        {
            var v = new Vector<float>(block.Slice(i, w));
            maxV = Vector.Max(maxV, Vector.Abs(v));
            finiteV += v * Vector<float>.Zero;
        }
        float max = 0f, finite = 0f;
        for (int j = 0; j < w; j++) { max = MathF.Max(max, maxV[j]); finite += finiteV[j]; }
        for (; i < block.Length; i++) { max = MathF.Max(max, MathF.Abs(block[i])); finite += block[i] * 0f; }
        return float.IsNaN(finite) ? float.NaN : max;
    }

    static void EncodeBlock(ReadOnlySpan<float> block, float reciprocal, float[] thresholds, byte[]? magnitudeCodes,
        int[] counts, byte[] codes)
    {
        int w = Vector<float>.Count, i = 0;
        var r = new Vector<float>(reciprocal);
        for (; i + w <= block.Length; i += w)
        {
            var s = new Vector<float>(block.Slice(i, w)) * r;
            if (magnitudeCodes is not null) s = Vector.Abs(s);
            var count = Vector<int>.Zero;
            foreach (var t in thresholds)
                count -= Vector.GreaterThan(s, new Vector<float>(t)); // true lanes are -1
            count.CopyTo(counts, i);
        }
        for (; i < block.Length; i++)
        {
            float s = block[i] * reciprocal;
            if (magnitudeCodes is not null) s = MathF.Abs(s);
            int count = 0;
            foreach (var t in thresholds) if (s > t) count++;
            counts[i] = count;
        }
        for (int j = 0; j < block.Length; j++)
            codes[j] = magnitudeCodes is null
                ? (byte)counts[j]
                : (byte)(magnitudeCodes[counts[j]] | (block[j] * reciprocal < 0 ? 0b1000 : 0));
    }

    static nint Address(Tensor t)
    {
        fixed (byte* p = t.bytes) return (nint)p; // native memory: it does not move
    }
}
