using System.Globalization;
using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Scoring;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using TorchSharp;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The recipe component that scores benchmark tasks on the model being trained (section <c>eval:</c>, see
/// <see cref="EvalConfig"/>): one call per evaluation point, in eval mode (no dropout) and without a graph, the
/// model's mode restored after. Scores come back flat, "task/metric" (e.g. "sales_mc/acc", "mmlu/acc" for a
/// group), the names of their metrics.csv columns. It remembers the first (the base model's, step 0) and the
/// latest scores for the run's summary.
/// </summary>
public sealed class TaskEvaluation(LlamaForCausalLM model, ITextTokenizer tokenizer, EvalConfig config)
{
    // Resolved once (the config check already resolved the names, so this cannot fail on a name).
    readonly TaskSelection selection = TaskCatalog.BuiltIn().Resolve(config.Tasks);

    /// <summary>The scores before the first step (null on a resumed run).</summary>
    public IReadOnlyDictionary<string, double>? Initial { get; private set; }

    /// <summary>The latest scores.</summary>
    public IReadOnlyDictionary<string, double>? Last { get; private set; }

    /// <summary>Scores the tasks after <paramref name="step"/> optimizer steps (0: the base model); null when
    /// <paramref name="cancel"/> fired meanwhile (the loop then stops at its next check, with its checkpoint).</summary>
    public IReadOnlyDictionary<string, double>? Score(int step, CancellationToken cancel)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            var results = EvalRunner.Run(new LlamaScoringModel(model, tokenizer), selection,
                new EvalOptions(config.Limit, config.NumFewshot, config.BatchSize), config.TaskDataMap, null, cancel);
            var scores = Flatten(results);
            if (step == 0) Initial = scores;
            Last = scores;
            return scores;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            return null;
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>Requested tasks and groups, and tasks outside any group, as "name/metric" -> value.</summary>
    IReadOnlyDictionary<string, double> Flatten(EvalResults results)
    {
        var scores = new Dictionary<string, double>();
        foreach (var t in results.Tasks.Where(t => results.Requested.Contains(t.Name) || !selection.GroupsOf(t.Name).Any()))
            foreach (var (key, s) in t.Metrics) scores[Column(t.Name, key)] = s.Value;
        foreach (var g in results.Groups.Where(g => results.Requested.Contains(g.Name)))
            foreach (var (key, s) in g.Metrics) scores[Column(g.Name, key)] = s.Value;
        return scores;
    }

    /// <summary>
    /// The metrics.csv column (and summary name) of a task's metric: "task/metric", spaces in the metric's display name
    /// made underscores. A control character in a task name (a line break from a quoted YAML string) becomes '_': the
    /// header must stay one line. Commas and quotes stay; the CSV writer quotes such a name (RFC 4180).
    /// </summary>
    public static string Column(string name, string metricKey) =>
        string.Concat($"{name}/{MetricNames.Display(metricKey).Replace(' ', '_')}".Select(c => char.IsControl(c) ? '_' : c));

    /// <summary>"sales_mc/acc 0.3241, sales_mc/acc_norm 0.2870" for logs.</summary>
    public static string Describe(IReadOnlyDictionary<string, double> scores) =>
        string.Join(", ", scores.Select(kv => $"{kv.Key} {kv.Value.ToString("F4", CultureInfo.InvariantCulture)}"));
}
