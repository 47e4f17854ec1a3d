using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>Which code computes an int8 x int8 -> int32 matrix product (LLM.int8()'s main part).</summary>
public enum Int8MatMulPath
{
    /// <summary>libtorch's <c>torch._int_mm</c> (cuBLASLt int8 GEMM on CUDA, a oneDNN/VNNI or scalar loop on the
    /// CPU), reached through a one-line TorchScript function because TorchSharp binds no _int_mm.</summary>
    IntMm,

    /// <summary>The codes as fp32 in chunks of at most 1024 along the inner dimension (<see cref="Int8MatMul.ExactChunk"/>):
    /// every partial sum is an integer below 2^24, so fp32 (and TF32) arithmetic is exact in any order; the chunks
    /// are added in int32. The torch-op path, on any device.</summary>
    Fp32Exact,
}

/// <summary>
/// C = A @ B^T for int8 A [n, k] and B [m, k] (codes in [-127, 127]), as exact int32, by the path a
/// <see cref="KernelSelection"/> chose. Both paths give the same integers (tests hold them to a plain loop).
/// </summary>
public sealed class Int8MatMul
{
    /// <summary>Largest inner chunk whose fp32 sums stay exact: 1024 * 127 * 127 = 16,516,096 &lt; 2^24.</summary>
    public const int ExactChunk = 1024;

    const string Script = "def int_mm(a: Tensor, b: Tensor) -> Tensor:\n    return torch._int_mm(a, b)\n";

    readonly jit.CompilationUnit? _intMm;

    Int8MatMul(jit.CompilationUnit? intMm) => _intMm = intMm;

    /// <summary>The fp32-exact path only (no TorchScript).</summary>
    public static readonly Int8MatMul TorchOps = new(null);

    /// <summary>
    /// The _int_mm path, compiled once per selection. Throws when libtorch cannot compile or run it (reported by
    /// the caller as the reason for <see cref="Int8MatMulPath.Fp32Exact"/>).
    /// </summary>
    public static Int8MatMul CompileIntMm(Device device)
    {
        var unit = jit.compile(Script);
        var path = new Int8MatMul(unit);
        // A probe of the smallest shape the CUDA kernel takes, so that a libtorch without it fails here, not mid-run.
        using var scope = NewDisposeScope();
        var a = ones(32, 16, ScalarType.Int8, device);
        var b = ones(32, 16, ScalarType.Int8, device);
        using var c = path.Multiply(a, b);
        if (c.dtype != ScalarType.Int32 || c[0, 0].item<int>() != 16)
            throw new InvalidOperationException("torch._int_mm gave a wrong result on a probe");
        return path;
    }

    public Int8MatMulPath Path => _intMm is null ? Int8MatMulPath.Fp32Exact : Int8MatMulPath.IntMm;

    /// <summary>int32 [n, m] = A [n, k] @ B [m, k]^T.</summary>
    public Tensor Multiply(Tensor a, Tensor b)
    {
        CheckOperands(a, b);
        return _intMm is not null && IntMmFits(a, b) ? ViaIntMm(a, b) : SumExactChunks(a, b);
    }

    /// <summary>Both operands int8 matrices with the same inner size.</summary>
    static void CheckOperands(Tensor a, Tensor b)
    {
        if (a.dtype != ScalarType.Int8 || b.dtype != ScalarType.Int8)
            throw new ArgumentException($"int8 matmul needs int8 operands, got {a.dtype} and {b.dtype}");
        if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != b.shape[1])
            throw new ArgumentException($"int8 matmul needs [n, k] and [m, k] operands, got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}]");
    }

    /// <summary>
    /// _int_mm's CUDA kernel needs k and m multiples of 8 (and at least 16) and more than 16 rows; fewer rows are
    /// padded with zero rows. Other shapes take the exact fp32 path.
    /// </summary>
    static bool IntMmFits(Tensor a, Tensor b) =>
        a.device_type != DeviceType.CUDA || (a.shape[1] % 8 == 0 && a.shape[1] >= 16 && b.shape[0] % 8 == 0 && b.shape[0] >= 16);

    Tensor ViaIntMm(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        long n = a.shape[0];
        var rows = a.device_type == DeviceType.CUDA && n <= 16 ? nn.functional.pad(a, [0, 0, 0, 32 - n]) : a;  // (>16, k)
        var c = (Tensor)_intMm!.invoke("int_mm", rows.contiguous(), b.t());                // (rows, m) int32
        return (ReferenceEquals(rows, a) ? c : c.narrow(0, 0, n).contiguous()).MoveToOuterDisposeScope();
    }

    /// <summary>The exact fp32 path (<see cref="Int8MatMulPath.Fp32Exact"/>) on any device.</summary>
    public static Tensor Fp32Exact(Tensor a, Tensor b)
    {
        CheckOperands(a, b);
        return SumExactChunks(a, b);
    }

    static Tensor SumExactChunks(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        long k = a.shape[1];
        Tensor? sum = null;
        for (long start = 0; start < k; start += ExactChunk)
        {
            long length = Math.Min(ExactChunk, k - start);
            var part = a.narrow(1, start, length).to(ScalarType.Float32)
                .matmul(b.narrow(1, start, length).to(ScalarType.Float32).t())              // (n, m), exact integers
                .to(ScalarType.Int32);
            sum = sum is null ? part : sum + part;
        }
        return (sum ?? zeros(a.shape[0], b.shape[0], ScalarType.Int32, a.device)).MoveToOuterDisposeScope();
    }
}
