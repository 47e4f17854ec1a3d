using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// SmoothQuant's migration (Xiao et al. 2022, eq. 4), as the authors' <c>smooth_ln_fcs_llama_like</c> computes it for
/// an RMSNorm feeding linears that share its output: per input channel j,
/// s_j = clamp(max|X_j|^α / max(max_k |W_kj| over all the linears' rows, 1e-5)^(1-α), 1e-5). Then
/// norm.weight_j /= s_j and W[:, j] *= s_j for every linear: X diag(s)^-1 · (diag(s) W^T) = X W^T, so the float
/// output is unchanged while the activation's outlier channels shrink by s_j and the weights' grow.
/// </summary>
public static class SmoothingScales
{
    /// <param name="activationMax">max |X_j| over the calibration tokens (in).</param>
    /// <param name="weights">the linears that read the norm's output, each (out_k, in).</param>
    /// <returns>s (in), fp32.</returns>
    public static Tensor Compute(Tensor activationMax, IReadOnlyList<Tensor> weights, double alpha)
    {
        using var scope = NewDisposeScope();
        var weightMax = cat(weights.Select(w => w.detach().to(ScalarType.Float32).abs().amax([0], keepdim: true)).ToArray(), 0)
            .amax([0]).clamp_min(1e-5);                                                   // (in)
        var s = (activationMax.to(ScalarType.Float32).pow(alpha) / weightMax.pow(1 - alpha)).clamp_min(1e-5);
        return s.MoveToOuterDisposeScope();
    }

    /// <summary>Running max |x| per channel of the inputs x (..., in) seen so far.</summary>
    public static Tensor UpdateMax(Tensor? runningMax, Tensor x)
    {
        using var scope = NewDisposeScope();
        var m = x.detach().reshape(-1, x.shape[^1]).abs().amax([0]).to(ScalarType.Float32);
        var result = runningMax is null ? m : maximum(runningMax, m);
        return result.MoveToOuterDisposeScope();
    }
}
