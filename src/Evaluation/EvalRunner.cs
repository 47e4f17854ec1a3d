using QLoraNet.Evaluation.Metrics;
using QLoraNet.Evaluation.Scoring;

namespace QLoraNet.Evaluation;

/// <summary>
/// Runs a selection of tasks on a model and aggregates groups (size-weighted means with pooled stderr, as the harness).
/// <paramref name="dataPaths"/> maps a task, group or tag name to the local copy of its data (<c>--task-data</c>); a
/// task takes the first that names it, its groups (innermost first) or its tags.
/// </summary>
public static class EvalRunner
{
    public static EvalResults Run(IScoringModel model, TaskSelection selection, EvalOptions options,
        IReadOnlyDictionary<string, string>? dataPaths = null, IProgress<EvalProgress>? progress = null, CancellationToken cancel = default)
    {
        dataPaths ??= new Dictionary<string, string>();
        var known = selection.Tasks.Select(t => t.Name).Concat(selection.Groups.Select(g => g.Name))
            .Concat(selection.Tasks.SelectMany(t => t.Tags ?? [])).ToHashSet();
        foreach (string key in dataPaths.Keys)
            if (!known.Contains(key))
                throw new TaskException($"--task-data {key}=...: '{key}' is none of the selected tasks, groups or tags ({string.Join(", ", selection.Requested)})");

        var results = new List<TaskResult>();
        foreach (var task in selection.Tasks)
        {
            string? path = new[] { task.Name }.Concat(selection.GroupsOf(task.Name)).Concat(task.Tags ?? [])
                .Select(n => dataPaths.GetValueOrDefault(n)).FirstOrDefault(p => p != null);
            results.Add(TaskRunner.Run(model, task, path, options, progress, cancel));
        }

        var groupResults = new Dictionary<string, GroupResult>();
        foreach (var group in selection.Groups) Aggregate(group.Name);
        return new EvalResults(results, selection.Groups.Select(g => groupResults[g.Name]).ToList(), selection.Requested);

        GroupResult Aggregate(string name)
        {
            if (groupResults.TryGetValue(name, out var done)) return done;
            var group = selection.Groups.First(g => g.Name == name);
            var members = selection.GroupMembers[name];
            var memberMetrics = members.Select(m => selection.Groups.Any(g => g.Name == m)
                ? (Aggregate(m).Metrics, Aggregate(m).Tasks)
                : (Metrics: results.First(r => r.Name == m).Metrics, Tasks: (IReadOnlyList<string>)[m])).ToList();
            var aggregates = group.Aggregates.Count > 0 ? group.Aggregates
                : memberMetrics.SelectMany(m => m.Metrics.Keys).Distinct().Select(k => (k.Split(',')[0], true)).Distinct().ToList();
            var metrics = new Dictionary<string, Score>();
            foreach (var (metric, weight) in aggregates)
            {
                string key = metric.Contains(',') ? metric : metric + ",none";
                var scores = memberMetrics.Where(m => m.Metrics.ContainsKey(key)).Select(m => m.Metrics[key]).ToList();
                if (scores.Count > 0) metrics[key] = MeanAndStderr.Pooled(scores, weight);
            }
            var tasks = memberMetrics.SelectMany(m => m.Tasks).Distinct().ToList();
            var result = new GroupResult(name, group.Alias, tasks, results.Where(r => tasks.Contains(r.Name)).Sum(r => r.Samples), metrics);
            groupResults[name] = result;
            return result;
        }
    }
}
