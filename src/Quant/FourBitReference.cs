using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The slow, obviously-correct 4-bit quantizer: plain loops over float[] that spell out bitsandbytes'
/// quantize_4bit / dequantize_4bit (and the double quantization of the scales) one element at a time.
/// Tests hold the tensor path in <see cref="FourBitWeight"/> equal to this bit for bit.
/// </summary>
public static class FourBitReference
{
    public static FourBitWeight Quantize(float[] weight, long[] shape, FourBitType type, int blockSize = FourBitWeight.DefaultBlockSize,
        bool doubleQuant = false, int nestedBlockSize = DoubleQuantizedScales.DefaultNestedBlockSize)
    {
        int n = weight.Length;
        int blocks = (n + blockSize - 1) / blockSize;
        var absmax = new float[blocks];
        var codes = new byte[n + n % 2]; // an odd n ends with the code of 0.0 (bitsandbytes pads the last block with zeros)
        codes[^1] = FourBitCodebook.Encode(type, 0f);
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize, end = Math.Min(start + blockSize, n);
            float max = 0f;
            for (int i = start; i < end; i++)
                max = MathF.Max(max, MathF.Abs(weight[i]));
            absmax[b] = max;
            float reciprocal = 1f / MathF.Max(max, 1e-38f);
            for (int i = start; i < end; i++)
                codes[i] = FourBitCodebook.Encode(type, weight[i] * reciprocal);
        }
        var packed = new byte[codes.Length / 2];
        for (int k = 0; k < packed.Length; k++)
            packed[k] = (byte)((codes[2 * k] << 4) | codes[2 * k + 1]);

        BlockScales scales = doubleQuant ? QuantizeScales(absmax, nestedBlockSize) : new PlainScales(tensor(absmax));
        return new FourBitWeight(type, tensor(packed), scales, shape, blockSize, ScalarType.Float32);
    }

    /// <summary>The dense weight as fp32, flattened row-major.</summary>
    public static float[] Dequantize(FourBitWeight w)
    {
        var packed = w.Packed.cpu().data<byte>().ToArray();
        var absmax = DequantizeScales(w.Scales);
        var values = FourBitCodebook.Values(w.Type);
        var dense = new float[w.Numel];
        for (int i = 0; i < dense.Length; i++)
        {
            int code = i % 2 == 0 ? packed[i / 2] >> 4 : packed[i / 2] & 0xF;
            dense[i] = values[code] * absmax[i / w.BlockSize];
        }
        return dense;
    }

    /// <summary>Double quantization of the scales: subtract the mean, 8-bit dynamic code per nested block.</summary>
    public static DoubleQuantizedScales QuantizeScales(float[] absmax, int nestedBlockSize)
    {
        double sum = 0;
        foreach (var a in absmax) sum += a;
        float offset = (float)(sum / absmax.Length);

        int blocks = (absmax.Length + nestedBlockSize - 1) / nestedBlockSize;
        var nestedAbsmax = new float[blocks];
        var codes = new byte[absmax.Length];
        for (int b = 0; b < blocks; b++)
        {
            int start = b * nestedBlockSize, end = Math.Min(start + nestedBlockSize, absmax.Length);
            float max = 0f;
            for (int i = start; i < end; i++)
                max = MathF.Max(max, MathF.Abs(absmax[i] - offset));
            nestedAbsmax[b] = max;
            float reciprocal = 1f / MathF.Max(max, 1e-38f);
            for (int i = start; i < end; i++)
                codes[i] = DynamicMap.Encode((absmax[i] - offset) * reciprocal);
        }
        return new DoubleQuantizedScales(tensor(codes), tensor(nestedAbsmax), offset, nestedBlockSize);
    }

    public static float[] DequantizeScales(BlockScales scales)
    {
        if (scales is PlainScales plain)
            return plain.Absmax.cpu().data<float>().ToArray();
        var dq = (DoubleQuantizedScales)scales;
        var codes = dq.Codes.cpu().data<byte>().ToArray();
        var nested = dq.NestedAbsmax.cpu().data<float>().ToArray();
        var map = DynamicMap.Values();
        var absmax = new float[codes.Length];
        for (int i = 0; i < absmax.Length; i++)
        {
            float scaled = map[codes[i]] * nested[i / dq.NestedBlockSize];
            absmax[i] = scaled + dq.Offset;
        }
        return absmax;
    }
}
