using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// Exact int8 x int8 -> int32 matrix products on any device, by torch ops (the path W8A8 takes until a fused int8
/// kernel, e.g. LLM.int8()'s, is selected for it): the inner dimension is cut into chunks of <see cref="Chunk"/>
/// = 1024, each chunk multiplied in fp32 and converted to int32, and the chunks summed in int32. fp32 holds every
/// integer up to 2^24 exactly and a chunk's partial sums never exceed 1024 · 128 · 128 = 2^24 in magnitude, so
/// every product and partial sum, in any summation order (BLAS blocking, FMA), is exact: the result equals integer
/// arithmetic bit for bit. (libtorch's int8 GEMM, torch._int_mm, is CUDA-only and not exposed by TorchSharp.)
/// Needs matmul in true fp32 (no TF32), libtorch's default.
/// </summary>
public static class Int8MatMul
{
    public const int Chunk = 1024;

    /// <summary>a (m, k) int8 · b^T where b is (n, k) int8 -> (m, n) int32.</summary>
    public static Tensor MatMulTransposed(Tensor a, Tensor b)
    {
        if (a.dtype != ScalarType.Int8 || b.dtype != ScalarType.Int8)
            throw new ArgumentException($"int8 matmul needs int8 operands, got {a.dtype} and {b.dtype}");
        if (a.shape[1] != b.shape[1]) throw new ArgumentException($"int8 matmul: inner sizes {a.shape[1]} and {b.shape[1]} differ");
        using var scope = NewDisposeScope();
        long k = a.shape[1];
        Tensor? sum = null;
        for (long k0 = 0; k0 < k; k0 += Chunk)
        {
            long len = Math.Min(Chunk, k - k0);
            var part = a.narrow(1, k0, len).to(ScalarType.Float32).matmul(b.narrow(1, k0, len).to(ScalarType.Float32).t())
                .to(ScalarType.Int32);
            sum = sum is null ? part : sum.add_(part);
        }
        return sum!.MoveToOuterDisposeScope();
    }
}
