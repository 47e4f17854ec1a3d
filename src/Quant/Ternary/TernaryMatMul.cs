using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>Which code sums the ternary product.</summary>
public enum TernaryMatMulPath
{
    /// <summary>Add/subtract loop over the packed bytes on the CPU (<see cref="CpuTernaryKernel"/>).</summary>
    CpuSimd,

    /// <summary>The add/subtract CUDA kernel (<see cref="TernaryCudaKernel"/>), used once it passed its self-check on
    /// the device (<see cref="TernaryKernelSelfCheck"/>).</summary>
    Cuda,

    /// <summary>Unpack to fp32 {-1, 0, 1} and matmul the integer activation codes (exact: every partial sum is an
    /// integer below 2^24 while in_features &lt; 131072): the dequantize-then-matmul reference.</summary>
    TorchOps,
}

/// <summary>
/// The forward product of a BitNet b1.58 linear, transformers' AutoBitLinear in offline mode
/// (y = linear(ActQuant(x), W_ternary) * weight_scale), with the activations kept as integer codes:
/// <code>
///   (n, s) = 8-bit codes and per-token scales of x          (<see cref="TernaryActivations"/>)
///   C      = n @ W_ternary^T                                 exact integers: only additions and subtractions
///   y      = (C / s) * weight_scale                          fp32, then the compute dtype
/// </code>
/// Every path computes the same integers C, so the result is bit-identical whichever runs. transformers sums the
/// fp32 values n/s instead; the two differ by fp32 rounding of the sum (relative 2^-24 per term), the bound the
/// BitNet parity test states.
/// </summary>
public static class TernaryMatMul
{
    /// <summary>Most tokens (rows of x) a call sends to the add/subtract CUDA kernel; above it the product unpacks the
    /// weight and multiplies the integer codes with torch ops. Measured on an H200 (2026-11-30, `bench kernel --only
    /// ternary`, x 4096 -> 4096, kernel vs unpack + matmul): 1 token 55 vs 193 us, 4: 83 vs 204, 16: 161 vs 233,
    /// 64: 414 vs 247, 256: 1390 vs 374, 2048: 10678 vs 1742. The kernel, which reads the 2-bit weights, wins while
    /// the unpacking dominates (decoding); from 64 tokens the matmul does. 4096 -> 11008 agrees (16 tokens: 301 vs
    /// 465 us). The threshold sits between the last size the kernel won and the first it lost.</summary>
    public const int CudaKernelMaxTokens = 32;

    /// <summary>The path one call takes: <see cref="TernaryMatMulPath.Cuda"/> only up to <paramref name="maxTokens"/>
    /// rows, <see cref="TernaryMatMulPath.TorchOps"/> above; other paths unchanged. Pure, for the dispatcher and tests.</summary>
    public static TernaryMatMulPath PathForTokens(TernaryMatMulPath selected, long tokens, int maxTokens = CudaKernelMaxTokens) =>
        selected == TernaryMatMulPath.Cuda && tokens > maxTokens ? TernaryMatMulPath.TorchOps : selected;


    /// <summary>y (..., out) in <paramref name="computeDType"/>; <paramref name="cuda"/>: the loaded kernel, needed by
    /// <see cref="TernaryMatMulPath.Cuda"/> only.</summary>
    public static Tensor Forward(Tensor x, TernaryWeight w, ScalarType computeDType, TernaryMatMulPath path, TernaryCudaKernel? cuda = null, int maxTokens = CudaKernelMaxTokens)
    {
        using var scope = NewDisposeScope();
        long k = w.Shape[1], m = w.Shape[0];
        var leading = x.shape[..^1];
        var (codes, scale) = TernaryActivations.Quantize(x.reshape(-1, k));               // (n, k) fp32 integers, (n)
        var sums = Sums(codes, w, path, cuda, maxTokens);                                          // (n, m) fp32 integers
        var y = sums / scale.unsqueeze(1) * w.Scale.to(ScalarType.Float32);
        return y.to(computeDType).reshape([.. leading, m]).MoveToOuterDisposeScope();
    }

    /// <summary>C = codes @ W_ternary^T as fp32 integers, by <paramref name="path"/> (<paramref name="cuda"/>: the loaded
    /// kernel, needed by <see cref="TernaryMatMulPath.Cuda"/> only).</summary>
    public static Tensor Sums(Tensor codes, TernaryWeight w, TernaryMatMulPath path, TernaryCudaKernel? cuda = null, int maxTokens = CudaKernelMaxTokens)
    {
        using var scope = NewDisposeScope();
        path = PathForTokens(path, codes.shape[0], maxTokens);                                     // the one place the token rule lives
        Tensor sums = path switch
        {
            TernaryMatMulPath.CpuSimd => CpuTernaryKernel.Multiply(codes.to(ScalarType.Int8).contiguous(), w.Packed.contiguous()).to(ScalarType.Float32),
            TernaryMatMulPath.Cuda => (cuda ?? throw new ArgumentException("the CUDA ternary path needs its loaded kernel (KernelSelection.TernaryCuda)"))
                .Multiply(codes.to(ScalarType.Int8).contiguous(), w.Packed.contiguous()).to(ScalarType.Float32),
            _ => codes.matmul(w.Unpack().t()).to(ScalarType.Int32).to(ScalarType.Float32),   // through int32: no -0.0, as the kernels
        };
        return sums.MoveToOuterDisposeScope();
    }
}
