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
/// <item><see cref="SearchScales(Tensor, Tensor, Func{Tensor, Tensor}, bool, int)"/>: _search_best_scale / _compute_best_scale: for ratio r = k/20, k = 0..19, the
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

    /// <summary>The same budget on a CUDA device: 2^28 floats (1 GiB in fp32), the size of AutoAWQ's own temporary
    /// there (256 rows x 512 tokens x 4096 inputs in fp16). Each row batch costs ~250 small kernels whatever its size,
    /// so 8 rows a batch (2^24 at 4096 inputs) made a 7B layer's clip search ~2.5 million launches: host-bound.</summary>
    public const long ClipBatchFloatsCuda = 1L << 28;

    /// <summary>The clip search's budget for a weight on <paramref name="device"/>.</summary>
    public static long ClipBatchFloatsFor(Device device) => device.type == DeviceType.CUDA ? ClipBatchFloatsCuda : ClipBatchFloats;

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

    /// <summary>The dequantized weight <see cref="Round"/> gives, alone (same shape and bits as its Dequantized).</summary>
    public static Tensor PseudoQuantize(Tensor weight, long group, int maxQ = 15)
    {
        using var scope = NewDisposeScope();
        var w = weight.detach().to(ScalarType.Float32).reshape(-1, group);              // (out*groups, group)
        return FakeQuantizeGroups(w, maxQ).reshape(weight.shape).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Round"/>'s dequantized weight of fp32 groups (n, group), in 15 ops and without the integer codes:
    /// the searches call it once per candidate, so it is their inner loop. Same operations in the same order as Round
    /// (in place where Round allocates), hence the same bits.
    /// </summary>
    static Tensor FakeQuantizeGroups(Tensor w, int maxQ)
    {
        var min = w.amin([1], keepdim: true);
        var scale = w.amax([1], keepdim: true).sub_(min).clamp_min_(1e-5).div_(maxQ);
        var zero = min.div_(scale).round_().neg_().clamp_(0, maxQ);
        return w.div(scale).round_().add_(zero).clamp_(0, maxQ).sub_(zero).mul_(scale);
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
    public static ScaleChoice SearchScales(Tensor xMean, Tensor wMean, Func<Tensor, double> errorOf, bool duoScaling = true, int grid = GridPoints) =>
        SearchScales(xMean, wMean, s => tensor(errorOf(s), ScalarType.Float64), duoScaling, grid);

    /// <summary>
    /// <see cref="SearchScales(Tensor, Tensor, Func{Tensor, double}, bool, int)"/> with each error a scalar tensor
    /// (float64) left on its device: the 20 errors are read back together once the grid is done, so the host does not
    /// wait for the device after every candidate. The choice is made on the host as AutoAWQ makes it (the first
    /// strictly smaller error wins; NaN never does).
    /// </summary>
    public static ScaleChoice SearchScales(Tensor xMean, Tensor wMean, Func<Tensor, Tensor> errorOf, bool duoScaling = true, int grid = GridPoints)
    {
        var candidates = new List<Tensor>();
        var pending = new List<Tensor>();
        try
        {
            for (int k = 0; k < grid; k++)
            {
                var s = CandidateScales(xMean, wMean, (double)k / grid, duoScaling);
                candidates.Add(s);
                pending.Add(errorOf(s));
            }
            double[] errors;
            using (var readScope = NewDisposeScope())
                errors = stack(pending.Select(e => e.to(ScalarType.Float64).reshape([])).ToArray()).cpu().data<double>().ToArray();
            int best = -1;
            double bestError = double.PositiveInfinity;
            for (int k = 0; k < grid; k++)
                if (errors[k] < bestError) (best, bestError) = (k, errors[k]);
            if (best < 0) throw new InvalidOperationException($"AWQ scale search found no finite error (errors: {string.Join(", ", errors)})");
            var chosen = candidates[best];
            candidates.RemoveAt(best);
            return new ScaleChoice(chosen, (double)best / grid, errors);
        }
        finally
        {
            foreach (var t in candidates.Concat(pending)) t.Dispose();
        }
    }

    /// <summary>Q(W · s) / s: the weight as the block sees it when s is folded into its input.</summary>
    public static Tensor ScaledRoundTrip(Tensor weight, Tensor scales, long group, int maxQ = 15)
    {
        using var scope = NewDisposeScope();
        var s = scales.to(ScalarType.Float32).unsqueeze(0);                              // (1, in)
        var q = FakeQuantizeGroups((weight.to(ScalarType.Float32) * s).reshape(-1, group), maxQ).reshape(weight.shape);
        return q.div_(s).MoveToOuterDisposeScope();
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
        // shrink step's temporaries are freed before the next, so a pass holds one such product, not one per step.
        long rowBatch = Math.Clamp(batchFloats / Math.Max(1, x.shape[1] * cols), 1, 256);
        // On the host a temporary this large is fresh pages from the OS each time (malloc maps and unmaps it), and
        // faulting them in cost more than the arithmetic: one buffer takes every product instead. CUDA's caching
        // allocator reuses its blocks by itself, where the copy would only add a pass over memory.
        var buffer = x.device.type == DeviceType.CPU ? empty([Math.Min(rowBatch, rows), x.shape[1], groups, group], ScalarType.Float32) : null;
        Tensor GroupOutputs(Tensor wq)                                                  // (b, 1, groups, group) -> (b, tokens, groups)
        {
            if (buffer is null) return (x * wq).sum([-1]);
            // x · w rounded once, as x * w: the same bits (IEEE multiplication commutes), summed over the same layout.
            return buffer.narrow(0, 0, wq.shape[0]).copy_(x).mul_(wq).sum([-1]);
        }
        var best = new List<Tensor>();
        for (long r0 = 0; r0 < rows; r0 += rowBatch)
        {
            using var batchScope = NewDisposeScope();
            var wb = w.narrow(0, r0, Math.Min(rowBatch, rows - r0));                      // (b, 1, groups, group)
            var originalMax = wb.abs().amax([-1], keepdim: true);                         // (b, 1, groups, 1)
            var bestMax = originalMax.clone();
            var minError = full_like(originalMax, 1e9);
            var reference = GroupOutputs(wb);                                               // (b, tokens, groups)
            for (int i = 0; i < (int)(maxShrink * grid); i++)
            {
                using var stepScope = NewDisposeScope();
                var maxVal = originalMax * (1 - (double)i / grid);
                var clipped = wb.clamp(-maxVal, maxVal);                                    // = min(max(w, -m), m)
                var q = FakeQuantizeGroups(clipped.reshape(-1, group), maxQ).view(clipped.shape);
                var error = GroupOutputs(q).sub_(reference).pow_(2).mean([1]).view(minError.shape);
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
        using (var scope = NewDisposeScope()) QuantInputChecks.RequireFinite(weight.abs().amax([1]), name);   // temporaries freed now, not by the GC
        using var r = Round(weight, group, format.MaxQ);
        return AwqWeight.FromCodes(format, r.Codes, r.Scales, r.Zeros, weight.dtype);
    }
}
