using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// RMSNorm (Zhang &amp; Sennrich 2019) in torch ops: the reference the fused kernel (Cuda/rms_norm.cu) is held to,
/// and what runs wherever the kernel cannot (CPU, other dtypes). Forward is Hugging Face's arithmetic exactly:
///   Llama (LlamaRMSNorm):  y = w * (h32 * rsqrt(mean(h32^2) + eps)).to(dtype)     (the weight multiply in dtype)
///   Gemma (GemmaRMSNorm):  y = ((h32 * rsqrt(mean(h32^2) + eps)) * (1 + w32)).to(dtype)
/// Backward is the closed form the kernel computes (the weight is frozen: dx only), in the same roundings as
/// autograd through the forward:
///   g = (dy * w) rounded to dtype, as fp32 (Llama) | dy32 * (1 + w32) (Gemma)
///   dx = (g * r - h32 * (r^3 * sum(g * h32) / H)).to(dtype),   r = rsqrt(mean(h32^2) + eps) per row
/// </summary>
public static class RmsNormReference
{
    /// <param name="x">(..., H)</param>
    /// <param name="weight">(H)</param>
    /// <param name="unitOffset">Gemma's (1 + w) scale instead of w.</param>
    /// <returns>(..., H) in x's dtype.</returns>
    public static Tensor Forward(Tensor x, Tensor weight, double eps, bool unitOffset)
    {
        using var scope = NewDisposeScope();
        var dtype = x.dtype;
        var x32 = Wide(x);
        var variance = x32.pow(2).mean([-1L], keepdim: true);                 // (..., 1)
        var normed = x32 * rsqrt(variance + eps);
        var y = unitOffset
            ? (normed * (1.0 + Wide(weight))).to(dtype)
            : weight.to(dtype) * normed.to(dtype);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>The statistics dtype: fp32 (fp64 for fp64 inputs, which the tests use to check the formulas exactly).</summary>
    static Tensor Wide(Tensor t) => t.dtype == ScalarType.Float64 ? t : t.to(ScalarType.Float32);

    /// <summary>r = rsqrt(mean(h^2) + eps) per row, fp32: what forward saves for backward.</summary>
    /// <returns>(...) fp32 (fp64 for fp64 h), one value per row of <paramref name="h"/>.</returns>
    public static Tensor InverseRms(Tensor h, double eps)
    {
        using var scope = NewDisposeScope();
        var h32 = Wide(h);
        return rsqrt(h32.pow(2).mean([-1L]) + eps).MoveToOuterDisposeScope();
    }

    /// <param name="dy">(..., H) gradient of y, in h's dtype.</param>
    /// <param name="h">(..., H) the normed input.</param>
    /// <param name="inverseRms">(...) fp32 from <see cref="InverseRms"/>.</param>
    /// <returns>dx (..., H) in h's dtype.</returns>
    public static Tensor Backward(Tensor dy, Tensor h, Tensor inverseRms, Tensor weight, bool unitOffset)
    {
        using var scope = NewDisposeScope();
        var dtype = h.dtype;
        long width = h.shape[^1];
        var h32 = Wide(h);
        var r = inverseRms.unsqueeze(-1);                                     // (..., 1)
        var g = unitOffset
            ? Wide(dy) * (1.0 + Wide(weight))
            : Wide(dy * weight.to(dtype));
        var s = (g * h32).sum([-1L], keepdim: true);                         // (..., 1)
        var dx = g * r - h32 * (r.pow(3) * s / width);
        return dx.to(dtype).MoveToOuterDisposeScope();
    }
}
