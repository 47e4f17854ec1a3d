using QLoraNet.Evaluation.Metrics;
using QLoraNet.Evaluation.Scoring;

namespace QLoraNet.Evaluation;

/// <summary>Scores of one evaluation: per task, per group, and the mean of the requested entries' headline metric.</summary>
public sealed record EvalResults(IReadOnlyList<TaskResult> Tasks, IReadOnlyList<GroupResult> Groups, IReadOnlyList<string> Requested)
{
    /// <summary>Each requested task's or group's headline score (acc_norm, else acc, else its first metric).</summary>
    public IReadOnlyList<(string Name, string Metric, Score Score)> Headlines() => Requested.Select(name =>
    {
        if (Groups.FirstOrDefault(g => g.Name == name) is { } g)
        {
            string key = g.Metrics.Keys.FirstOrDefault(k => k == "acc_norm,none") ?? g.Metrics.Keys.FirstOrDefault(k => k == "acc,none") ?? g.Metrics.Keys.FirstOrDefault() ?? "acc,none";
            return (name, key, g.Metrics.GetValueOrDefault(key, new Score(double.NaN, null, 0)));
        }
        var t = Tasks.First(t => t.Name == name);
        return (name, t.PrimaryMetric, t.Metrics[t.PrimaryMetric]);
    }).ToList();

    /// <summary>The unweighted mean of the headlines (the leaderboard's average), stderr sqrt(sum se^2) / k.</summary>
    public Score Average()
    {
        var h = Headlines().Select(x => x.Score).Where(s => !double.IsNaN(s.Value)).ToList();
        if (h.Count == 0) return new Score(double.NaN, null, 0);
        double? se = h.All(s => s.Stderr != null) ? Math.Sqrt(h.Sum(s => s.Stderr!.Value * s.Stderr.Value)) / h.Count : null;
        return new Score(h.Average(s => s.Value), se, h.Sum(s => s.Count));
    }
}
