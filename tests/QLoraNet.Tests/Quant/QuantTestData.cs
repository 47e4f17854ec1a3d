using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

/// <summary>Deterministic test inputs and bitwise comparisons for the quantization tests.</summary>
static class QuantTestData
{
    /// <summary>n samples of N(0, sigma^2) from a seeded Box-Muller, as float[].</summary>
    public static float[] Normal(int n, int seed, float sigma = 1f)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            v[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return v;
    }

    public static float[] Floats(Tensor t) => t.detach().cpu().to(ScalarType.Float32).contiguous().data<float>().ToArray();

    public static byte[] Bytes(Tensor t) => t.cpu().contiguous().data<byte>().ToArray();

    /// <summary>The tensor's memory as bytes, whatever its dtype.</summary>
    public static byte[] RawBytes(Tensor t) => t.cpu().contiguous().bytes.ToArray();

    /// <summary>Equal as bit patterns (so -0.0 != 0.0 and every last bit counts).</summary>
    public static void AssertBitsEqual(float[] expected, float[] actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}[{i}]: {actual[i]:R}, expected {expected[i]:R}");
    }

    public static void AssertTensorsIdentical(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(RawBytes(expected).SequenceEqual(RawBytes(actual)), $"{what}: bytes differ");
    }
}
