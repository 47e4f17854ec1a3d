using QLoraNet.Evaluation.Metrics;

namespace QLoraNet.Evaluation;

/// <summary>One scored row, for <c>--log-samples</c>: where it came from, its gold, what the model gave (the choices'
/// log-likelihoods, or the generation) and its metric values.</summary>
public sealed record SampleRecord(int DocId, string Origin, object? Target, IReadOnlyList<double>? LogLikelihoods,
    string? Generation, IReadOnlyDictionary<string, double> Metrics);

/// <summary>One task's scores. Metric keys are the harness's "metric,filter" ("acc,none", "exact_match,strict-match").</summary>
public sealed record TaskResult(string Name, string? Alias, string Source, int Samples, int NumFewshot,
    IReadOnlyDictionary<string, Score> Metrics, IReadOnlyList<SampleRecord>? Rows = null)
{
    /// <summary>The headline metric: acc_norm if scored, else acc, else the first.</summary>
    public string PrimaryMetric => Metrics.Keys.FirstOrDefault(k => k == "acc_norm,none")
        ?? Metrics.Keys.FirstOrDefault(k => k == "acc,none") ?? Metrics.Keys.First();
}

/// <summary>A group's aggregate over its tasks (MMLU over its 57 subjects).</summary>
public sealed record GroupResult(string Name, string? Alias, IReadOnlyList<string> Tasks, int Samples,
    IReadOnlyDictionary<string, Score> Metrics);

/// <summary>"acc,none" as people read it: "acc"; "exact_match,strict-match" as "exact_match (strict-match)".</summary>
public static class MetricNames
{
    public static string Display(string key)
    {
        int comma = key.IndexOf(',');
        if (comma < 0) return key;
        string filter = key[(comma + 1)..];
        return filter == "none" ? key[..comma] : $"{key[..comma]} ({filter})";
    }
}
