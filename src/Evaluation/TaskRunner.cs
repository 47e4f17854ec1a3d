using QLoraNet.Evaluation.Config;
using QLoraNet.Evaluation.Data;
using QLoraNet.Evaluation.Metrics;
using QLoraNet.Evaluation.Processing;
using QLoraNet.Evaluation.Prompts;
using QLoraNet.Evaluation.Scoring;

namespace QLoraNet.Evaluation;

/// <summary>How to run tasks: row limit, few-shot count and seed, batch size, where each task's data is.</summary>
/// <param name="Limit">score only the first N rows of each task (the harness's --limit)</param>
/// <param name="NumFewshot">overrides every task's num_fewshot</param>
/// <param name="FewshotSeed">the harness's default fewshot_random_seed is 1234</param>
/// <param name="Chat">a chat format for generative tasks' prompts (the harness's --apply_chat_template); null: raw text</param>
public sealed record EvalOptions(int? Limit = null, int? NumFewshot = null, int BatchSize = 8, ulong FewshotSeed = 1234,
    IChatPrompt? Chat = null);

/// <summary>
/// Runs one task end to end: reads its rows (scored split, then few-shot split), preprocesses them, builds every
/// prompt and request and checks every row (choices, gold index) before the model runs, scores them in batches, and
/// reduces per-row metrics to means with standard errors.
/// </summary>
public static class TaskRunner
{
    public static TaskResult Run(IScoringModel model, TaskConfig task, string? dataPath, EvalOptions options,
        IProgress<EvalProgress>? progress = null, CancellationToken cancel = default)
    {
        var docs = LoadSplit(task, task.EvalSplit!, dataPath);
        if (options.Limit is { } limit) docs = docs.Take(limit).ToList();
        if (docs.Count == 0) throw new TaskException($"task '{task.Name}': split '{task.EvalSplit}' has no rows");

        var renderer = new DocRenderer(task);
        bool multipleInput = task.DocToChoice.IsSet && renderer.Text(docs[0]) is long;
        int shots = options.NumFewshot ?? task.NumFewshot ?? 0;
        FewShotSampler? sampler = null;
        if (shots > 0)
        {
            string split = task.FewshotSource ?? throw new TaskException($"{task.SourceFile}: task '{task.Name}' names no split to draw few-shot examples from");
            sampler = new FewShotSampler(LoadSplit(task, split, dataPath), task.FewshotSampler, options.FewshotSeed);
        }
        var builder = new PromptBuilder(renderer, sampler, multipleInput);
        // The harness drops the scored row from its draw when the few-shot split is the scored split (and, as it
        // compares the configured names, when neither is set).
        bool exclude = task.FewshotSplit == task.TestSplit;
        var contexts = docs.Select(d => builder.Contexts(d, shots, exclude)).ToList();

        var rows = task.OutputType == OutputType.GenerateUntil
            ? ScoreGenerations(model, task, renderer, docs, contexts, options.Chat, progress, cancel)
            : ScoreLoglikelihoods(model, task, renderer, docs, contexts, multipleInput, options.BatchSize, progress, cancel);

        var metrics = rows.SelectMany(r => r.Metrics.Keys).Distinct()
            .ToDictionary(k => k, k => MeanAndStderr.Of(rows.Select(r => r.Metrics[k]).ToList()));
        return new TaskResult(task.Name, task.Alias, task.SourceFile, docs.Count, shots, metrics, rows);
    }

    public static List<Doc> LoadSplit(TaskConfig task, string split, string? dataPath)
    {
        var docs = SplitFiles.Find(task, split, dataPath).SelectMany(DocFiles.Read).ToList();
        return task.ProcessDocs is { } p ? docs.Select(d => DocPreprocessors.Apply(p, d)).ToList() : docs;
    }

    static List<SampleRecord> ScoreLoglikelihoods(IScoringModel model, TaskConfig task, DocRenderer renderer,
        List<Doc> docs, List<IReadOnlyList<string>> contexts, bool multipleInput, int batchSize,
        IProgress<EvalProgress>? progress, CancellationToken cancel)
    {
        var requests = new List<LoglikelihoodRequest>();
        var spans = new List<(int Start, int Count, int Gold, IReadOnlyList<string> Choices)>();
        for (int d = 0; d < docs.Count; d++)
        {
            var doc = docs[d];
            if (task.OutputType == OutputType.Loglikelihood)
            {
                string target = renderer.Target(doc) as string
                    ?? throw new TaskException($"{task.SourceFile}: task '{task.Name}' doc_to_target must give text for a loglikelihood task (row {doc.Origin})");
                spans.Add((requests.Count, 1, 0, [target]));
                requests.Add(new LoglikelihoodRequest(contexts[d][0], target));
                continue;
            }
            var choices = renderer.Choices(doc);
            int gold = Gold(task, renderer, doc, choices, multipleInput);
            spans.Add((requests.Count, choices.Count, gold, choices));
            if (multipleInput)
            {
                string cont = renderer.Target(doc) as string
                    ?? throw new TaskException($"{task.SourceFile}: task '{task.Name}' with one context per choice needs doc_to_target to give the shared continuation text (row {doc.Origin})");
                requests.AddRange(contexts[d].Select(ctx => new LoglikelihoodRequest(ctx, task.TargetDelimiter + cont)));
            }
            else requests.AddRange(choices.Select(c => new LoglikelihoodRequest(contexts[d][0], task.TargetDelimiter + c)));
        }

        var scores = LoglikelihoodRunner.Run(model, requests, batchSize, task.Name, progress, cancel);
        var metricNames = task.MetricsOrDefault.Select(m => m.Name).ToList();
        return docs.Select((doc, d) =>
        {
            var (start, count, gold, choices) = spans[d];
            var s = scores.Skip(start).Take(count).ToList();
            var lls = s.Select(x => x.LogProb).ToList();
            if (task.OutputType == OutputType.Loglikelihood)
                return new SampleRecord(d, doc.Origin, choices[0], lls, null, new Dictionary<string, double> { ["acc,none"] = s[0].IsGreedy ? 1 : 0 });
            if (task.ProcessResults is { } pr)
                return new SampleRecord(d, doc.Origin, gold, lls, null, ResultProcessors.Apply(pr, doc, lls).ToDictionary(kv => kv.Key + ",none", kv => kv.Value));
            var row = new Dictionary<string, double>();
            foreach (string m in metricNames)
                row[m + ",none"] = m switch
                {
                    "acc" => ChoiceMetrics.Acc(lls, gold),
                    "acc_norm" => ChoiceMetrics.AccNorm(lls, choices, gold),
                    "acc_bytes" => ChoiceMetrics.AccBytes(lls, choices, gold),
                    _ => s[gold].IsGreedy ? 1 : 0, // exact_match: the gold continuation is the greedy one
                };
            return new SampleRecord(d, doc.Origin, gold, lls, null, row);
        }).ToList();
    }

    /// <summary>The gold choice's index, checked: an index in range, or text that is one of the choices.</summary>
    static int Gold(TaskConfig task, DocRenderer renderer, Doc doc, IReadOnlyList<string> choices, bool multipleInput)
    {
        object gold = multipleInput ? renderer.Text(doc) : renderer.Target(doc);
        long index = gold switch
        {
            long i => i,
            string s => choices.ToList().IndexOf(s) is var at and >= 0 ? at
                : throw new TaskException($"{task.SourceFile}: task '{task.Name}' target {PythonValues.Repr(s)} is not one of the choices {PythonValues.Repr(choices.Cast<object?>().ToList())} (row {doc.Origin})"),
            _ => throw new TaskException($"{task.SourceFile}: task '{task.Name}' target must be an index or a choice (row {doc.Origin})"),
        };
        if (index < 0 || index >= choices.Count)
            throw new TaskException($"{task.SourceFile}: task '{task.Name}' gold index {index} is out of range for {choices.Count} choices (row {doc.Origin})");
        return (int)index;
    }

    static List<SampleRecord> ScoreGenerations(IScoringModel model, TaskConfig task, DocRenderer renderer,
        List<Doc> docs, List<IReadOnlyList<string>> contexts, IChatPrompt? chat, IProgress<EvalProgress>? progress, CancellationToken cancel)
    {
        var golds = docs.Select(doc =>
        {
            object t = renderer.Target(doc);
            if (task.DocToChoice.IsSet && t is long i)
            {
                var choices = renderer.Choices(doc);
                return i >= 0 && i < choices.Count ? choices[(int)i]
                    : throw new TaskException($"{task.SourceFile}: task '{task.Name}' gold index {i} is out of range for {choices.Count} choices (row {doc.Origin})");
            }
            return PythonValues.Str(t);
        }).ToList();
        var until = task.Until ?? [task.FewshotDelimiter];
        var generations = GenerationRunner.Run(model, contexts.Select(c => c[0]).ToList(), until, task.MaxGenToks, task.Name, progress, cancel, chat);
        var pipelines = task.Filters ?? [AnswerFilters.None];
        return docs.Select((_, d) =>
        {
            var row = new Dictionary<string, double>();
            foreach (var pipeline in pipelines)
            {
                string answer = AnswerFilters.Apply(pipeline, generations[d]);
                foreach (var metric in task.MetricsOrDefault)
                    row[$"{metric.Name},{pipeline.Name}"] = ExactMatch.Score(metric, answer, golds[d]);
            }
            return new SampleRecord(d, docs[d].Origin, golds[d], null, generations[d], row);
        }).ToList();
    }
}
