using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Awq;

/// <summary>AWQ's rounding of one weight: codes (out, in) and zero points (out, groups) in [0, maxq], fp32 scales
/// (out, groups), and the dequantized weight (out, in) fp32 the codes stand for.</summary>
public sealed record AwqRounding(Tensor Codes, Tensor Scales, Tensor Zeros, Tensor Dequantized) : IDisposable
{
    public void Dispose()
    {
        Codes.Dispose();
        Scales.Dispose();
        Zeros.Dispose();
        Dequantized.Dispose();
    }
}

/// <summary>
/// The arithmetic of AWQ, as AutoAWQ's <c>AwqQuantizer</c> does it (<c>awq/quantize/quantizer.py</c>), on tensors and
/// callbacks only (which linears share an input, and which op their scales fold into, is the model's business:
/// QLoraNet.Models.Calibration.AwqLayerQuantizer):
/// <list type="bullet">
/// <item><see cref="Round"/>: pseudo_quantize_tensor with zero point: per group of the row, scale = max(max - min,
/// 1e-5) / 15, zero = clamp(-round(min / scale), 0, 15), q = clamp(round(w / scale) + zero, 0, 15);</item>
/// <item><see cref="SearchScales"/>: _search_best_scale / _compute_best_scale: for ratio r = k/20, k = 0..19, the
/// candidate s = clamp(mean|x|^r / (wmean^(1-r) + 1e-4), 1e-4) ("duo scaling"; wmean = the mean over rows of |w|
/// normalised by its group's max), divided by sqrt(max(s)·min(s)); the caller measures the output error of the block
/// with each weight replaced by Q(W·s)/s; the first smallest error wins;</item>
/// <item><see cref="SearchClip"/>: _compute_best_clip: per output row and group, the max |w| shrunk by 0..45 % in
/// steps of 5 %, keeping the one whose quantized group output (on up to 512 evenly spaced calibration tokens) is
/// closest to the float one.</item>
/// </list>
/// All arithmetic in fp32 (AutoAWQ works in fp16 on the GPU).
/// </summary>
public static class AwqSearch
{
    /// <summary>AutoAWQ's n_grid.</summary>
    public const int GridPoints = 20;

    /// <summary>Floats in one (rows, tokens, in) temporary of <see cref="SearchClip"/>: 2^24 (64 MiB in fp32). Rows
    /// are independent, so the batch decides memory, not results.</summary>
    public const long ClipBatchFloats = 1L << 24;

    /// <summary>Rounds <paramref name="weight"/> (out, in) in groups of <paramref name="group"/> inputs to 4 bits with zero points.</summary>
    public static AwqRounding Round(Tensor weight, long group, int maxQ = 15)
    {
        using var scope = NewDisposeScope();
        long rows = weight.shape[0], cols = weight.shape[1];
        var w = weight.detach().to(ScalarType.Float32).reshape(-1, group);              // (out*groups, group)
        var max = w.amax([1], keepdim: true);
        var min = w.amin([1], keepdim: true);
        var scale = (max - min).clamp_min(1e-5) / maxQ;
        var zero = (-(min / scale).round()).clamp(0, maxQ);
        var q = ((w / scale).round() + zero).clamp(0, maxQ);
        var dequantized = (q - zero) * scale;
        return new AwqRounding(q.reshape(rows, cols).to(ScalarType.Int64).MoveToOuterDisposeScope(),
            scale.reshape(rows, -1).MoveToOuterDisposeScope(), zero.reshape(rows, -1).to(ScalarType.Int64).MoveToOuterDisposeScope(),
            dequantized.reshape(rows, cols).MoveToOuterDisposeScope());
    }

    /// <summary>The dequantized weight <see cref="Round"/> gives, alone.</summary>
    public static Tensor PseudoQuantize(Tensor weight, long group, int maxQ = 15)
    {
        using var r = Round(weight, group, maxQ);
        return r.Dequantized.alias();
    }

    /// <summary>mean |x| per input channel over all tokens of x (..., in), fp32 (in).</summary>
    public static Tensor InputMean(Tensor x)
    {
        using var scope = NewDisposeScope();
        return x.detach().reshape(-1, x.shape[^1]).to(ScalarType.Float32).abs().mean([0]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The mean over output rows of |w| / (max |w| of its group + 1e-6), with the weights of all linears sharing the
    /// input stacked along the rows: (in), fp32.
    /// </summary>
    public static Tensor WeightMean(IReadOnlyList<Tensor> weights, long group)
    {
        using var scope = NewDisposeScope();
        var w = cat(weights.Select(t => t.detach().to(ScalarType.Float32)).ToArray(), 0);   // (sum out, in)
        var groups = w.abs().reshape(-1, group);
        var normalised = groups / (groups.amax([1], keepdim: true) + 1e-6);
        return normalised.reshape(w.shape).mean([0]).MoveToOuterDisposeScope();
    }

    /// <summary>The candidate scales at <paramref name="ratio"/> (in), normalised so that max·min = 1.</summary>
    public static Tensor CandidateScales(Tensor xMean, Tensor wMean, double ratio, bool duoScaling = true)
    {
        using var scope = NewDisposeScope();
        var s = duoScaling
            ? (xMean.pow(ratio) / (wMean.pow(1 - ratio) + 1e-4)).clamp_min(1e-4)
            : xMean.pow(ratio).clamp_min(1e-4);
        s = s / (s.max() * s.min()).sqrt();
        s = where(s.isfinite(), s, ones_like(s));                                       // inf or NaN -> 1
        return s.MoveToOuterDisposeScope();
    }

    /// <summary>What the scale search found: the scales, their ratio and the error of every ratio tried.</summary>
    public sealed record ScaleChoice(Tensor Scales, double Ratio, IReadOnlyList<double> Errors);

    /// <summary>
    /// Tries the 20 ratios; <paramref name="errorOf"/> gets candidate scales (in) and returns the block's output error
    /// with its weights replaced by <see cref="ScaledRoundTrip"/> (mean squared difference to the float output).
    /// </summary>
    public static ScaleChoice SearchScales(Tensor xMean, Tensor wMean, Func<Tensor, double> errorOf, bool duoScaling = true, int grid = GridPoints)
    {
        var errors = new List<double>();
        Tensor? best = null;
        double bestError = double.PositiveInfinity, bestRatio = -1;
        for (int k = 0; k < grid; k++)
        {
            double ratio = (double)k / grid;
            var s = CandidateScales(xMean, wMean, ratio, duoScaling);
            double error = errorOf(s);
            errors.Add(error);
            if (error < bestError)
            {
                best?.Dispose();
                (best, bestError, bestRatio) = (s, error, ratio);
            }
            else s.Dispose();
        }
        if (best is null) throw new InvalidOperationException($"AWQ scale search found no finite error (errors: {string.Join(", ", errors)})");
        return new ScaleChoice(best, bestRatio, errors);
    }

    /// <summary>Q(W · s) / s: the weight as the block sees it when s is folded into its input.</summary>
    public static Tensor ScaledRoundTrip(Tensor weight, Tensor scales, long group, int maxQ = 15)
    {
        using var scope = NewDisposeScope();
        var s = scales.to(ScalarType.Float32).unsqueeze(0);                              // (1, in)
        var q = PseudoQuantize(weight.to(ScalarType.Float32) * s, group, maxQ);
        return (q / s).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The best clipping bound per row and group (out, groups): for shrink 0, 5, ..., 45 % of each group's max |w|,
    /// the output error on the sampled tokens of <paramref name="inputs"/> (tokens, in), mean over tokens.
    /// </summary>
    /// <param name="batchFloats">the budget of one (rows, tokens, in) temporary; rows are batched to fit it.</param>
    public static Tensor SearchClip(Tensor weight, Tensor inputs, long group, int maxQ = 15, int grid = GridPoints,
        double maxShrink = 0.5, int sampleTokens = 512, long batchFloats = ClipBatchFloats)
    {
        using var scope = NewDisposeScope();
        long rows = weight.shape[0], cols = weight.shape[1], groups = cols / group;
        var x = inputs.detach().reshape(-1, cols).to(ScalarType.Float32);
        long step = Math.Max(1, x.shape[0] / sampleTokens);
        x = x.slice(0, 0, x.shape[0], step).reshape(1, -1, groups, group);             // (1, tokens, groups, group)
        var w = weight.detach().to(ScalarType.Float32).reshape(rows, 1, groups, group);
        // Rows per pass: the (rows, tokens, in) product stays near batchFloats (AutoAWQ takes 256 or 64 rows). Each
        // shrink step's temporaries are freed before the next, so a pass holds a few such products, not one per step.
        long rowBatch = Math.Clamp(batchFloats / Math.Max(1, x.shape[1] * cols), 1, 256);
        var best = new List<Tensor>();
        for (long r0 = 0; r0 < rows; r0 += rowBatch)
        {
            using var batchScope = NewDisposeScope();
            var wb = w.narrow(0, r0, Math.Min(rowBatch, rows - r0));                      // (b, 1, groups, group)
            var originalMax = wb.abs().amax([-1], keepdim: true);                         // (b, 1, groups, 1)
            var bestMax = originalMax.clone();
            var minError = full_like(originalMax, 1e9);
            Tensor reference;
            using (var productScope = NewDisposeScope())
                reference = (x * wb).sum([-1]).MoveToOuterDisposeScope();                 // (b, tokens, groups)
            for (int i = 0; i < (int)(maxShrink * grid); i++)
            {
                using var stepScope = NewDisposeScope();
                var maxVal = originalMax * (1 - (double)i / grid);
                var clipped = minimum(maximum(wb, -maxVal), maxVal);
                var q = PseudoQuantize(clipped.reshape(-1, cols), group, maxQ).reshape(clipped.shape);
                var error = (x * q).sum([-1]).sub_(reference).pow_(2).mean([1]).view(minError.shape);
                var better = error.lt(minError);
                var (nextError, nextMax) = (where(better, error, minError), where(better, maxVal, bestMax));
                minError.Dispose();
                bestMax.Dispose();
                (minError, bestMax) = (nextError.MoveToOuterDisposeScope(), nextMax.MoveToOuterDisposeScope());
            }
            best.Add(bestMax.squeeze(1).squeeze(-1).MoveToOuterDisposeScope());             // (b, groups)
        }
        return cat(best, 0).MoveToOuterDisposeScope();
    }

    /// <summary>AutoAWQ's apply_clip: every group clamped to [-max, max] of its row's bound (out, groups).</summary>
    public static Tensor Clip(Tensor weight, Tensor maxVal)
    {
        using var scope = NewDisposeScope();
        long rows = weight.shape[0], groups = maxVal.shape[1];
        var w = weight.reshape(rows, groups, -1);
        var m = maxVal.to(weight.dtype).unsqueeze(2);
        return minimum(maximum(w, -m), m).reshape(weight.shape).MoveToOuterDisposeScope();
    }

    /// <summary>Rounds and packs: the stored weight of an (already scaled and clipped) float weight.</summary>
    public static AwqWeight Quantize(Tensor weight, AwqFormat format, string? name = null)
    {
        QuantInputChecks.RequireFloat(weight, name);
        long group = format.GroupLength(weight.shape[1], name);
        QuantInputChecks.RequireFinite(weight.abs().amax([1]), name);
        using var r = Round(weight, group, format.MaxQ);
        return AwqWeight.FromCodes(format, r.Codes, r.Scales, r.Zeros, weight.dtype);
    }
}
