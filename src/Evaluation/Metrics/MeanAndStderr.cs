namespace QLoraNet.Evaluation.Metrics;

/// <summary>A metric's mean over rows and its standard error; Stderr is null for fewer than two rows (the harness
/// prints N/A).</summary>
public readonly record struct Score(double Value, double? Stderr, int Count);

/// <summary>
/// Aggregation as lm-evaluation-harness computes it (lm_eval/api/metrics.py): the mean over rows with the sample
/// standard error of the mean, sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n), the harness's <c>mean_stderr</c> (its
/// analytic stderr; no bootstrap is needed for means). A group's score is the size-weighted mean of its members
/// (or plain mean) with the pooled stderr sqrt(sum (n_i - 1) n_i se_i^2 / (N - k) / N), the harness's
/// <c>pooled_sample_stderr</c>.
/// </summary>
public static class MeanAndStderr
{
    public static Score Of(IReadOnlyList<double> values)
    {
        int n = values.Count;
        if (n == 0) return new Score(double.NaN, null, 0);
        double mean = values.Average();
        if (n < 2) return new Score(mean, null, n);
        double ss = values.Sum(x => (x - mean) * (x - mean));
        return new Score(mean, Math.Sqrt(ss / (n - 1)) / Math.Sqrt(n), n);
    }

    public static Score Pooled(IReadOnlyList<Score> members, bool weightBySize)
    {
        var present = members.Where(m => m.Count > 0 && !double.IsNaN(m.Value)).ToList();
        if (present.Count == 0) return new Score(double.NaN, null, 0);
        int total = present.Sum(m => m.Count);
        double value = weightBySize
            ? present.Sum(m => m.Value * m.Count) / total
            : present.Average(m => m.Value);
        double? stderr = null;
        if (present.All(m => m.Stderr != null) && total > present.Count)
        {
            double pooledVar = present.Sum(m => (m.Count - 1) * m.Stderr!.Value * m.Stderr.Value * m.Count) / (total - present.Count);
            stderr = Math.Sqrt(pooledVar / total);
        }
        return new Score(value, stderr, total);
    }
}
