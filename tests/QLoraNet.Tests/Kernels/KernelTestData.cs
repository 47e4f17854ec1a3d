using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Kernels;

/// <summary>Seeded inputs and the comparisons the kernel-op tests share.</summary>
static class KernelTestData
{
    /// <summary>The fused ops as selected for the CPU: every one runs its torch-op reference.</summary>
    public static QLoraNet.Kernels.FusedKernels Cpu => QLoraNet.Kernels.FusedKernels.Load(CPU);

    /// <summary>N(0, scale^2) values of the given shape and dtype, drawn in fp64 from a local seeded generator.</summary>
    public static Tensor Randn(long[] shape, ScalarType dtype, int seed, double scale = 1.0)
    {
        using var g = new Generator((ulong)seed);
        using var r = randn(shape, ScalarType.Float64, generator: g);
        return (r * scale).to(dtype);
    }

    /// <summary>The gradient of sum(output * weight) with respect to each input (a random direction in output space).</summary>
    public static Tensor[] Grads(Tensor output, Tensor weight, params Tensor[] inputs) =>
        autograd.grad([output], inputs, [weight], allow_unused: true).ToArray();

    /// <summary>max |a - b| / max |b| over all elements, in fp64.</summary>
    public static double RelativeError(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var a64 = a.detach().to(ScalarType.Float64);
        var b64 = b.detach().to(ScalarType.Float64);
        double scale = b64.abs().max().item<double>();
        return (a64 - b64).abs().max().item<double>() / (scale == 0 ? 1 : scale);
    }

    /// <summary>Elementwise |a - b| &lt;= bound (same shape), with the worst element in the message.</summary>
    public static void AssertWithin(Tensor actual, Tensor expected, Tensor bound, string what)
    {
        using var scope = NewDisposeScope();
        var diff = (actual.detach().to(ScalarType.Float64) - expected.detach().to(ScalarType.Float64)).abs();
        var excess = diff - bound.to(ScalarType.Float64);
        long worst = excess.reshape(-1).argmax().item<long>();
        double e = excess.reshape(-1)[worst].item<double>();
        Assert.True(e <= 0, $"{what}: element {worst} differs by {diff.reshape(-1)[worst].item<double>():G6}, bound {bound.to(ScalarType.Float64).expand(diff.shape).reshape(-1)[worst].item<double>():G6}");
    }

    /// <summary>Equal bit for bit (same dtype and shape; NaN never passes unless both hold the same NaN).</summary>
    public static void AssertIdentical(Tensor actual, Tensor expected, string what)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        using var scope = NewDisposeScope();
        var a = actual.detach().cpu().contiguous().bytes.ToArray();
        var b = expected.detach().cpu().contiguous().bytes.ToArray();
        if (a.AsSpan().SequenceEqual(b)) return;
        double maxDiff = (actual.detach().to(ScalarType.Float64) - expected.detach().to(ScalarType.Float64)).abs().max().item<double>();
        Assert.Fail($"{what}: not bit-identical (max abs diff {maxDiff:G6})");
    }

    /// <summary>Unit roundoff of a dtype: half the distance from 1 to the next value (2^-53, 2^-24, 2^-8).</summary>
    public static double Roundoff(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 => Math.Pow(2, -53),
        ScalarType.Float32 => Math.Pow(2, -24),
        ScalarType.BFloat16 => Math.Pow(2, -8),
        _ => throw new ArgumentException(dtype.ToString()),
    };
}
