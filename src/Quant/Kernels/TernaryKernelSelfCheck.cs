using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The one-time check a ternary kernel passes on its device before <see cref="KernelSelection"/> lets a model use it:
/// small random problems that reach every branch of ternary_matmul.cu (k a multiple of 4 — the 32-bit path — and not
/// — the byte path; k past one warp step of 128 and 32 inputs; n not a multiple of the 8 tokens a warp takes; m/4 not a
/// multiple of the 4 packed rows a block takes; the code -128 and all three weight values), each compared for exact
/// integer equality with the torch-op path (<see cref="TernaryMatMulPath.TorchOps"/>) on the same device. The PTX
/// is only ever tested by emulation off the GPU (tests/KernelsOnCpu); this keeps a build whose kernel computes
/// anything else on the device from producing numbers: it reports why and the selection keeps torch ops.
/// </summary>
public static class TernaryKernelSelfCheck
{
    /// <summary>(tokens, inputs, packed rows) of each problem.</summary>
    internal static readonly (int N, int K, int Quarter)[] Problems =
    [
        (13, 260, 5),    // 32-bit path, 3 steps of 128 inputs (the last partial), a partial token group, a partial block
        (13, 37, 5),     // byte path, 2 steps of 32 inputs (the last partial)
        (1, 4, 1),       // the smallest of each: one token, one word
        (9, 70, 6),      // byte path with k % 4 == 2, one token past a group
    ];

    /// <summary>
    /// Null when <paramref name="sums"/> (int8 codes [n, k], uint8 packed [m/4, k] on <paramref name="device"/> ->
    /// int32 [n, m]) equals the torch-op path on every problem; else one line naming the first problem and element
    /// that differ. Exceptions of the kernel (a launch or device fault) propagate.
    /// </summary>
    public static string? Run(Device device, Func<Tensor, Tensor, Tensor> sums)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(20261130);   // a local generator: the global RNG stays untouched
        foreach (var (n, k, quarter) in Problems)
        {
            long m = 4L * quarter;
            var q = randint(-1, 2, [m, k], generator: g).to(ScalarType.Float32);         // (m, k) in {-1, 0, 1}
            var codes = randint(-128, 128, [n, k], generator: g).to(ScalarType.Float32);  // (n, k) integer codes
            codes[0, 0] = tensor(-128f);                                                   // the one code whose negation does not fit a byte
            var w = new TernaryWeight(TernaryWeight.Pack(q).to(device), ones(1, ScalarType.BFloat16, device), [m, k], ScalarType.Float32);
            var onDevice = codes.to(device);
            var expected = TernaryMatMul.Sums(onDevice, w, TernaryMatMulPath.TorchOps).to(ScalarType.Int32).cpu();
            var actual = sums(onDevice.to(ScalarType.Int8).contiguous(), w.Packed.contiguous());
            if (actual.dtype != ScalarType.Int32 || !actual.shape.SequenceEqual(new[] { (long)n, m }))
                return $"n={n} k={k} m={m}: got {actual.dtype} [{string.Join(", ", actual.shape)}], expected Int32 [{n}, {m}]";
            var got = actual.cpu();
            var differ = got.ne(expected);
            long wrong = differ.sum().item<long>();
            if (wrong == 0) continue;
            var first = differ.flatten().nonzero()[0, 0].item<long>();
            long t = first / m, o = first % m;
            return $"n={n} k={k} m={m}: {wrong} of {n * m} sums differ, first at [{t}, {o}]: {got[t, o].item<int>()} instead of {expected[t, o].item<int>()}";
        }
        return null;
    }
}
