using QLoraNet.Evaluation.Templates;

namespace QLoraNet.Evaluation.Config;

/// <summary>What a task asks of the model: lm-evaluation-harness's three request kinds.</summary>
public enum OutputType { MultipleChoice, GenerateUntil, Loglikelihood }

/// <summary>
/// How a row becomes text, a target or choices (<c>doc_to_text</c>, <c>doc_to_target</c>, <c>doc_to_choice</c>): a
/// template, a fixed integer (TruthfulQA's <c>doc_to_target: 0</c>) or a fixed list (MMLU's <c>["A","B","C","D"]</c>).
/// A template that is exactly a field name reads that field as it is (its value may be an int or a list), as the
/// harness does.
/// </summary>
public sealed record DocSpec(Template? Template = null, long? Integer = null, IReadOnlyList<string>? List = null, string? Field = null)
{
    public bool IsSet => Template != null || Integer != null || List != null || Field != null;
}

/// <summary>One entry of <c>metric_list</c>. The exact-match options are those of the harness's exact_match metric.</summary>
public sealed record MetricSpec(string Name, bool IgnoreCase = false, bool IgnorePunctuation = false,
    IReadOnlyList<string>? RegexesToIgnore = null);

/// <summary>One step of a <c>filter_list</c> pipeline: <c>regex</c> (pattern, group_select, fallback) or
/// <c>take_first</c>.</summary>
public sealed record FilterStep(string Function, string? RegexPattern = null, int GroupSelect = 0, string Fallback = "[invalid]");

/// <summary>A named filter pipeline applied to generations before scoring (GSM8K's "strict-match").</summary>
public sealed record FilterPipeline(string Name, IReadOnlyList<FilterStep> Steps);

/// <summary>
/// One task, as read from a task YAML in lm-evaluation-harness's format (the subset in src/Evaluation/Tasks/README.md).
/// Immutable; <see cref="TaskFileReader"/> is the one place that reads and checks it. Data comes from local files
/// only: <see cref="DatasetPath"/> is a local directory or file (the built-ins name the hub id, which the user maps
/// to a local copy with <c>--task-data NAME=PATH</c>), or <see cref="DataFiles"/> names the file of each split.
/// </summary>
public sealed record TaskConfig(
    string Name,
    string SourceFile,
    OutputType OutputType,
    DocSpec DocToText,
    DocSpec DocToTarget,
    DocSpec DocToChoice,
    string? Alias = null,
    IReadOnlyList<string>? Tags = null,
    string? DatasetPath = null,
    string? DatasetName = null,
    IReadOnlyDictionary<string, IReadOnlyList<string>>? DataFiles = null,
    string? TrainingSplit = null,
    string? ValidationSplit = null,
    string? TestSplit = null,
    string? FewshotSplit = null,
    string FewshotSampler = "default",
    string? ProcessDocs = null,
    string? ProcessResults = null,
    Template? Description = null,
    string TargetDelimiter = " ",
    string FewshotDelimiter = "\n\n",
    int? NumFewshot = null,
    IReadOnlyList<MetricSpec>? Metrics = null,
    IReadOnlyList<string>? Until = null,
    int MaxGenToks = 256,
    IReadOnlyList<FilterPipeline>? Filters = null)
{
    /// <summary>The split scored: test if the task has one, else validation (the harness's eval_docs).</summary>
    public string? EvalSplit => TestSplit ?? ValidationSplit;

    /// <summary>The split few-shot examples come from: fewshot_split, else training, validation, test (the harness's order).</summary>
    public string? FewshotSource => FewshotSplit ?? TrainingSplit ?? ValidationSplit ?? TestSplit;

    /// <summary>Metrics scored: metric_list, or the harness's defaults for the output type.</summary>
    public IReadOnlyList<MetricSpec> MetricsOrDefault => Metrics ?? OutputType switch
    {
        OutputType.MultipleChoice => [new MetricSpec("acc"), new MetricSpec("acc_norm")],
        OutputType.GenerateUntil => [new MetricSpec("exact_match")],
        _ => [new MetricSpec("acc")],
    };
}

/// <summary>A group of tasks scored together (MMLU): members are task names, tags or other groups; the aggregate of
/// each metric is the mean over members weighted by their sizes (or not), with the harness's pooled stderr.</summary>
public sealed record GroupConfig(string Name, string SourceFile, IReadOnlyList<string> Members,
    IReadOnlyList<(string Metric, bool WeightBySize)> Aggregates, string? Alias = null);
