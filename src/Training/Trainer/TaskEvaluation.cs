using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Scoring;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using TorchSharp;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The recipe component that scores benchmark tasks on the model being trained (section <c>eval:</c>, see
/// <see cref="EvalConfig"/>): one call, dropout off and no graph while it runs, training mode restored after.
/// Scores come back flat, "task/metric" (e.g. "sales_mc/acc", "mmlu/acc" for a group), for metrics.csv.
/// </summary>
public static class TaskEvaluation
{
    public static IReadOnlyDictionary<string, double> Run(LlamaForCausalLM model, LlamaTextTokenizer tokenizer, int maxLength,
        IReadOnlyList<int> eosIds, EvalConfig tasks, CancellationToken cancel = default)
    {
        if (tasks.Tasks.Count == 0) return new Dictionary<string, double>();
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            var scorer = new LlamaScoringModel(model, tokenizer, maxLength, eosIds);
            var selection = TaskCatalog.BuiltIn().Resolve(tasks.Tasks);
            var results = Evaluator.Run(scorer, selection, new EvalOptions(tasks.Limit, tasks.NumFewshot, tasks.BatchSize),
                tasks.TaskDataMap, null, cancel);
            var scores = new Dictionary<string, double>();
            foreach (var t in results.Tasks.Where(t => results.Requested.Contains(t.Name) || selection.GroupsOf(t.Name).Any() == false))
                foreach (var (key, s) in t.Metrics) scores[$"{t.Name}/{MetricNames.Display(key).Replace(' ', '_')}"] = s.Value;
            foreach (var g in results.Groups.Where(g => results.Requested.Contains(g.Name)))
                foreach (var (key, s) in g.Metrics) scores[$"{g.Name}/{MetricNames.Display(key).Replace(' ', '_')}"] = s.Value;
            return scores;
        }
        finally
        {
            model.train();
        }
    }

    /// <summary>"sales_mc/acc 0.3241, sales_mc/acc_norm 0.2870" for logs.</summary>
    public static string Describe(IReadOnlyDictionary<string, double> scores) =>
        string.Join(", ", scores.Select(kv => $"{kv.Key} {kv.Value.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)}"));
}
