using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// hqq's zero-point solver, optimize_weights_proximal_legacy (hqq/core/optimize.py, its default
/// Quantizer.optimize_weights), step for step in fp32 (what hqq runs on the CPU; on CUDA it runs fp16). With the
/// quantizer q = clamp(round(W s + z), 0, 2^b - 1) and its inverse W_r = (q - z) / s (s is the inverse scale, as hqq
/// keeps it while solving), the half-quadratic splitting of min ||W - W_r||_p^p (p = 0.7 &lt; 1, robust to outliers;
/// Badri &amp; Shaji 2023) alternates, per iteration,
/// <code>
///   W_e = shrink_p(W - W_r, beta)          generalized soft-thresholding: sign(x) relu(|x| - |x|^(p-1) / beta)
///   z   = mean over the group of (q - (W - W_e) s)
///   beta = beta * kappa
/// </code>
/// from beta = 10, kappa = 1.01, for at most 20 iterations, and stops at the first iteration whose mean |W - W_r|
/// over the whole weight is not below the best so far (that iteration's zero update is kept, as hqq keeps it).
/// Only the zero point moves; the scale stays the min-max one. No calibration data.
/// </summary>
public static class HqqSolver
{
    public const double LpNorm = 0.7;   // a double, like hqq's Python float: pow(p - 1) then sees -0.30000000000000004
    public const double Beta = 10.0, Kappa = 1.01;
    public const int Iterations = 20;

    /// <summary>The optimized zero point [rows, 1] for groups <paramref name="w"/> [rows, g] (fp32), inverse scale
    /// <paramref name="scale"/> [rows, 1] and starting zero <paramref name="zero"/> [rows, 1]; <paramref name="iterations"/>
    /// says how many ran (for tests and reports).</summary>
    public static Tensor OptimizeZero(Tensor w, Tensor scale, Tensor zero, int maxCode, out int iterations)
    {
        double beta = Beta;
        float best = float.PositiveInfinity;
        iterations = 0;
        zero = zero.alias();                                                               // ours to dispose
        for (int i = 0; i < Iterations; i++)
        {
            iterations++;
            Tensor next;
            float error;
            using (var step = NewDisposeScope())                                           // one iteration's temporaries (weight-sized) at a time
            {
                var q = (w * scale + zero).round().clamp(0, maxCode);                     // (rows, g)
                var wr = (q - zero) / scale;
                var we = Shrink(w - wr, beta);
                next = (q - (w - we) * scale).mean([1], keepdim: true).MoveToOuterDisposeScope();   // (rows, 1)
                error = (w - wr).abs().mean().item<float>();
            }
            zero.Dispose();
            zero = next;
            beta *= Kappa;
            if (error < best) best = error;
            else break;
        }
        return zero;
    }

    /// <summary>hqq's shrink_lp_op for p &lt; 1: |x| - (1 / beta) |x|^(p - 1), clamped at 0, times sign(x); an exact
    /// zero stays zero (0^(p-1) is inf, |x| - inf is clamped to 0).</summary>
    static Tensor Shrink(Tensor x, double beta)
    {
        var magnitude = x.abs();
        var shrunk = (magnitude - magnitude.pow(LpNorm - 1) * (1.0 / beta)).clamp_min(0);
        return shrunk * x.sign();
    }
}
