using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The slow, obviously-correct linear quantizer: the formulas of <see cref="LinearQuantWeight"/> as loops over
/// float[]; tests hold the tensor path equal to this bit for bit.
/// </summary>
public static class LinearQuantReference
{
    public static LinearQuantWeight Quantize(float[] weight, long[] shape, LinearQuantFormat spec)
    {
        int groupLength = (int)LinearQuantWeight.GroupLength(spec, shape, null);
        int groups = weight.Length / groupLength;
        var scales = new float[groups];
        var zeros = new sbyte[groups];
        var codes = new sbyte[weight.Length];
        for (int g = 0; g < groups; g++)
        {
            var r = weight.AsSpan(g * groupLength, groupLength);
            float scale, zero = 0f;
            if (spec.Symmetric)
            {
                float max = 0f;
                foreach (var v in r) max = MathF.Max(max, MathF.Abs(v));
                scale = max / spec.QMax;
            }
            else
            {
                float rmin = 0f, rmax = 0f;
                foreach (var v in r) { rmin = MathF.Min(rmin, v); rmax = MathF.Max(rmax, v); }
                scale = (rmax - rmin) / (spec.QMax - spec.QMin);
                if (scale == 0f) scale = 1f;
                zero = Math.Clamp(MathF.Round(spec.QMin - rmin / scale), spec.QMin, spec.QMax);
            }
            if (scale == 0f) scale = 1f;
            scales[g] = scale;
            zeros[g] = (sbyte)zero;
            for (int i = 0; i < groupLength; i++)
            {
                float q = spec.Symmetric ? MathF.Round(r[i] / scale) : MathF.Round(r[i] / scale + zero);
                codes[g * groupLength + i] = (sbyte)Math.Clamp(q, spec.QMin, spec.QMax);
            }
        }
        var stored = spec.Bits <= 4 ? tensor(PackInt4(codes)) : tensor(codes.Select(c => (int)c).ToArray()).to(ScalarType.Int8);
        return new LinearQuantWeight(spec, stored, tensor(scales),
            spec.Symmetric ? null : tensor(zeros.Select(z => (int)z).ToArray()).to(ScalarType.Int8), shape, ScalarType.Float32);
    }

    /// <summary>The dense weight as fp32, flattened row-major.</summary>
    public static float[] Dequantize(LinearQuantWeight w)
    {
        var scales = w.Scales.cpu().data<float>().ToArray();
        var zeros = w.ZeroPoints?.cpu().data<sbyte>().ToArray();
        var codes = w.Spec.Bits <= 4 ? UnpackInt4(w.Codes.cpu().data<byte>().ToArray(), (int)w.Numel) : w.Codes.cpu().data<sbyte>().ToArray();
        int groupLength = codes.Length / scales.Length;
        var dense = new float[codes.Length];
        for (int i = 0; i < dense.Length; i++)
        {
            int g = i / groupLength;
            dense[i] = (codes[i] - (zeros?[g] ?? 0)) * scales[g];
        }
        return dense;
    }

    /// <summary>Two's complement nibbles, element 2k in the high nibble; an odd count pads a zero nibble.</summary>
    public static byte[] PackInt4(sbyte[] codes)
    {
        var packed = new byte[(codes.Length + 1) / 2];
        for (int i = 0; i < codes.Length; i++)
            packed[i / 2] |= (byte)(i % 2 == 0 ? (codes[i] & 0xF) << 4 : codes[i] & 0xF);
        return packed;
    }

    public static sbyte[] UnpackInt4(byte[] packed, int n)
    {
        var codes = new sbyte[n];
        for (int i = 0; i < n; i++)
        {
            int nibble = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
            codes[i] = (sbyte)(nibble >= 8 ? nibble - 16 : nibble);
        }
        return codes;
    }
}
