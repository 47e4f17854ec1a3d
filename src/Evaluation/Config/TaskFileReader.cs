using QLoraNet.Formats;
using System.Text.RegularExpressions;
using QLoraNet.Evaluation.Processing;
using QLoraNet.Evaluation.Templates;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Evaluation.Config;

/// <summary>
/// Reads one task or group YAML in lm-evaluation-harness's format: merges <c>include:</c> files (the including file's
/// keys win, as in the harness), binds every key once and checks it. Unknown keys, keys of the harness that are not
/// implemented, <c>!function</c> tags, bad types, unknown output types, metrics, filters and template syntax all fail
/// here with "file:line: problem", before any data or model is loaded.
/// </summary>
public static class TaskFileReader
{
    /// <summary>Harness keys we know and do not implement, with what to do instead.</summary>
    static readonly Dictionary<string, string> NotImplemented = new()
    {
        ["custom_dataset"] = "give dataset_path or dataset_kwargs.data_files",
        ["doc_to_image"] = "text tasks only",
        ["doc_to_audio"] = "text tasks only",
        ["unsafe_code"] = "no code execution",
        ["use_prompt"] = "promptsource templates are not available; write doc_to_text",
        ["gen_prefix"] = "put the prefix at the end of doc_to_text",
        ["training_split_kwargs"] = "not needed for local files",
    };

    public static readonly string[] OutputTypes = ["multiple_choice", "generate_until", "loglikelihood"];
    public static readonly string[] MetricNames = ["acc", "acc_norm", "acc_bytes", "exact_match"];

    /// <summary>A <see cref="TaskConfig"/> or a <see cref="GroupConfig"/>.</summary>
    public static object Read(TaskSourceFile file)
    {
        var keys = new YamlKeys(Merged(file, 0), file.DisplayPath);
        return keys.Has("group") ? BindGroup(keys) : BindTask(keys);
    }

    static Dictionary<string, YamlKeys.Entry> Merged(TaskSourceFile file, int depth)
    {
        var root = LoadRoot(file);
        var own = YamlKeys.Entries(root, file.DisplayPath);
        if (!own.TryGetValue("include", out var inc)) return own;
        if (inc.Value is not YamlScalarNode { Value: { Length: > 0 } name })
            throw new TaskException($"{YamlKeys.At(file.DisplayPath, inc.Value)}: 'include' must name one task file");
        if (depth > 8) throw new TaskException($"{YamlKeys.At(file.DisplayPath, inc.Value)}: includes nest more than 8 deep (a cycle?)");
        var included = file.Resolve(name)
            ?? throw new TaskException($"{YamlKeys.At(file.DisplayPath, inc.Value)}: included file {SafeText.Quote(name)} not found beside {file.DisplayPath}");
        var merged = Merged(included, depth + 1);
        merged.Remove("include");
        foreach (var (k, v) in own)
            if (k != "include") merged[k] = v;
        return merged;
    }

    static YamlMappingNode LoadRoot(TaskSourceFile file)
    {
        // Bounded: nesting, aliases and size are checked on the event stream before the recursive node builder runs.
        var stream = BoundedYaml.Load(file.Text, line => $"{file.DisplayPath}:{line}", m => new TaskException(m));
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new TaskException($"{file.DisplayPath}: a task file is one YAML mapping (task:, dataset_path:, doc_to_text:, ...)");
        return root;
    }

    static TaskConfig BindTask(YamlKeys k)
    {
        string name = k.String("task") ?? throw new TaskException($"{k.File}:1: missing required key 'task' (the task's name)");
        string outputName = k.String("output_type") ?? "generate_until";
        int typeIndex = Array.IndexOf(OutputTypes, outputName);
        if (typeIndex < 0)
            throw k.Error("output_type", $"output_type {SafeText.Quote(outputName)} is not supported; choose one of {string.Join(", ", OutputTypes)}");
        var outputType = (OutputType)typeIndex;

        var toText = DocSpecOf(k, "doc_to_text");
        var toTarget = DocSpecOf(k, "doc_to_target");
        var toChoice = DocSpecOf(k, "doc_to_choice");
        if (!toText.IsSet) throw new TaskException($"{k.File}:1: task {SafeText.Quote(name)} needs 'doc_to_text'");
        if (!toTarget.IsSet) throw new TaskException($"{k.File}:1: task {SafeText.Quote(name)} needs 'doc_to_target'");
        if (outputType == OutputType.MultipleChoice && !toChoice.IsSet)
            throw k.Error("output_type", $"output_type multiple_choice needs 'doc_to_choice' (the list of answers)");

        string? processDocs = k.String("process_docs");
        if (processDocs != null && !DocPreprocessors.Names.Contains(processDocs))
            throw k.Error("process_docs", $"process_docs {SafeText.Quote(processDocs)} is not a built-in preprocessor; choose one of {string.Join(", ", DocPreprocessors.Names)}");
        string? processResults = k.String("process_results");
        if (processResults != null && !ResultProcessors.Names.Contains(processResults))
            throw k.Error("process_results", $"process_results {SafeText.Quote(processResults)} is not a built-in result processor; choose one of {string.Join(", ", ResultProcessors.Names)}");
        if (processResults != null && outputType != OutputType.MultipleChoice)
            throw k.Error("process_results", $"process_results {SafeText.Quote(processResults)} scores multiple_choice tasks only");

        var (sampler, fewshotSplit) = FewshotConfig(k);
        int repeats = k.Int("repeats", 1) ?? 1;
        if (repeats != 1) throw k.Error("repeats", "'repeats' must be 1 (greedy generation gives the same answer every time)");
        k.Bool("should_decontaminate");
        k.Node("doc_to_decontamination_query");
        k.Node("metadata");
        k.Node("group_alias");

        var (until, maxGen) = GenerationKwargs(k, outputType);
        var config = new TaskConfig(
            Name: name,
            SourceFile: k.File,
            OutputType: outputType,
            DocToText: toText,
            DocToTarget: toTarget,
            DocToChoice: toChoice,
            Alias: k.String("task_alias"),
            Tags: k.Strings("tag"),
            DatasetPath: k.String("dataset_path"),
            DatasetName: k.String("dataset_name"),
            DataFiles: DataFilesOf(k),
            TrainingSplit: k.String("training_split"),
            ValidationSplit: k.String("validation_split"),
            TestSplit: k.String("test_split"),
            FewshotSplit: fewshotSplit ?? k.String("fewshot_split"),
            FewshotSampler: sampler,
            ProcessDocs: processDocs,
            ProcessResults: processResults,
            Description: k.String("description") is { } d ? Template.Parse(d, $"{k.Where("description")} description") : null,
            TargetDelimiter: k.String("target_delimiter") ?? " ",
            FewshotDelimiter: k.String("fewshot_delimiter") ?? "\n\n",
            NumFewshot: k.Int("num_fewshot", 0),
            Metrics: MetricsOf(k, outputType),
            Until: until,
            MaxGenToks: maxGen,
            Filters: FiltersOf(k));
        k.Finish(NotImplemented);
        if (config.EvalSplit is null)
            throw new TaskException($"{k.File}:1: task {SafeText.Quote(name)} needs 'test_split' or 'validation_split' (the split to score)");
        if (config.DatasetPath is null && config.DataFiles is null)
            throw new TaskException($"{k.File}:1: task {SafeText.Quote(name)} needs 'dataset_path' (a local directory or the hub id, mapped with --task-data {name}=PATH) or 'dataset_kwargs.data_files'");
        return config;
    }

    static DocSpec DocSpecOf(YamlKeys k, string key)
    {
        var node = k.Node(key);
        if (node is null) return new DocSpec();
        k.RefuseFunction(key, node);
        string where = $"{k.Where(key)} {key}";
        return node switch
        {
            YamlScalarNode { Style: ScalarStyle.Plain, Value: var v } when long.TryParse(v, out long l) => new DocSpec(Integer: l),
            YamlScalarNode s => new DocSpec(Template: Template.Parse(s.Value ?? "", where)),
            YamlSequenceNode seq => new DocSpec(List: seq.Children.Select(c => c is YamlScalarNode s ? s.Value ?? ""
                : throw k.Error(key, $"{SafeText.Quote(key)} as a list must hold strings")).ToList()),
            // The harness takes a mapping's values in order.
            YamlMappingNode map => new DocSpec(List: map.Children.Select(c => c.Value is YamlScalarNode s ? s.Value ?? ""
                : throw k.Error(key, $"{SafeText.Quote(key)} as a mapping must map to strings")).ToList()),
            _ => throw k.Error(key, $"{SafeText.Quote(key)} must be a template, an integer or a list"),
        };
    }

    static IReadOnlyDictionary<string, IReadOnlyList<string>>? DataFilesOf(YamlKeys k)
    {
        var kwargs = k.Map("dataset_kwargs");
        if (kwargs is null) return null;
        var node = kwargs.Node("data_files");
        kwargs.Finish();
        if (node is null) return null;
        // As in datasets.load_dataset: one file or a list means the "train" split; a mapping names each split's files.
        return node switch
        {
            YamlScalarNode or YamlSequenceNode => new Dictionary<string, IReadOnlyList<string>> { ["train"] = kwargs.Strings("data_files")! },
            YamlMappingNode => kwargs.Map("data_files")! is var files
                ? files.Keys.ToList().ToDictionary(s => s, s => files.Strings(s)!) : null,
            _ => throw kwargs.Error("data_files", "'data_files' must be a file, a list of files or a mapping of split to files"),
        };
    }

    static (string Sampler, string? Split) FewshotConfig(YamlKeys k)
    {
        var fc = k.Map("fewshot_config");
        if (fc is null) return ("default", null);
        string sampler = fc.String("sampler") ?? "default";
        if (sampler is not ("default" or "first_n"))
            throw fc.Error("sampler", $"fewshot_config.sampler {SafeText.Quote(sampler)} is not supported; choose default (seeded random draw) or first_n");
        string? split = fc.String("split");
        fc.Finish(new Dictionary<string, string> { ["samples"] = "put the examples in a split file", ["doc_to_text"] = "one doc_to_text serves both", ["doc_to_target"] = "one doc_to_target serves both", ["doc_to_choice"] = "one doc_to_choice serves both" });
        return (sampler, split);
    }

    static IReadOnlyList<MetricSpec>? MetricsOf(YamlKeys k, OutputType type)
    {
        var list = k.MapList("metric_list");
        if (list is null) return null;
        var metrics = new List<MetricSpec>();
        foreach (var m in list)
        {
            string name = m.String("metric") ?? throw new TaskException($"{m.File}: an entry of metric_list has no 'metric'");
            if (!MetricNames.Contains(name))
                throw m.Error("metric", $"metric {SafeText.Quote(name)} is not implemented; metrics: {string.Join(", ", MetricNames)}");
            bool forChoices = name != "exact_match";
            if (forChoices && type == OutputType.GenerateUntil)
                throw m.Error("metric", $"metric {SafeText.Quote(name)} scores log-likelihoods; a generate_until task uses exact_match");
            if (!forChoices && type == OutputType.Loglikelihood)
                throw m.Error("metric", "a loglikelihood task scores acc (is the continuation the greedy one)");
            string agg = m.String("aggregation") ?? "mean";
            if (agg != "mean") throw m.Error("aggregation", $"aggregation {SafeText.Quote(agg)} is not supported; every metric here is a mean over rows");
            m.Bool("higher_is_better");
            var regexes = m.Strings("regexes_to_ignore");
            foreach (var r in regexes ?? []) CheckRegex(m, "regexes_to_ignore", r);
            metrics.Add(new MetricSpec(name, m.Bool("ignore_case") ?? false, m.Bool("ignore_punctuation") ?? false, regexes));
            m.Finish(new Dictionary<string, string> { ["hf_evaluate"] = "metrics are built in", ["ignore_numbers"] = "not implemented" });
        }
        return metrics;
    }

    static (IReadOnlyList<string>? Until, int MaxGen) GenerationKwargs(YamlKeys k, OutputType type)
    {
        var g = k.Map("generation_kwargs");
        if (g is null) return (null, 256);
        if (type != OutputType.GenerateUntil) throw k.Error("generation_kwargs", "generation_kwargs apply to output_type generate_until only");
        var until = g.Strings("until");
        int maxGen = g.Int("max_gen_toks", 1) ?? 256;
        if (g.Bool("do_sample") == true) throw g.Error("do_sample", "only greedy decoding is implemented (do_sample: false)");
        if (g.Double("temperature") is { } t && t != 0) throw g.Error("temperature", "only greedy decoding is implemented (temperature: 0)");
        g.Finish();
        return (until, maxGen);
    }

    static IReadOnlyList<FilterPipeline>? FiltersOf(YamlKeys k)
    {
        var list = k.MapList("filter_list");
        if (list is null) return null;
        var pipelines = new List<FilterPipeline>();
        foreach (var p in list)
        {
            string name = p.String("name") ?? throw new TaskException($"{p.File}: an entry of filter_list has no 'name'");
            var steps = new List<FilterStep>();
            foreach (var s in p.MapList("filter") ?? throw p.Error("name", $"filter {SafeText.Quote(name)} has no 'filter' list of steps"))
            {
                string fn = s.String("function") ?? throw new TaskException($"{s.File}: a filter step has no 'function'");
                if (fn == "regex")
                {
                    string pattern = s.String("regex_pattern") ?? @"#### (\-?[0-9\.\,]+)";
                    CheckRegex(s, "regex_pattern", pattern);
                    steps.Add(new FilterStep(fn, pattern, s.Int("group_select", int.MinValue) ?? 0, s.String("fallback") ?? "[invalid]"));
                }
                else if (fn == "take_first") steps.Add(new FilterStep(fn));
                else throw s.Error("function", $"filter function {SafeText.Quote(fn)} is not implemented; functions: regex, take_first");
                s.Finish();
            }
            p.Finish();
            pipelines.Add(new FilterPipeline(name, steps));
        }
        return pipelines;
    }

    static void CheckRegex(YamlKeys k, string key, string pattern)
    {
        if (TaskRegex.Invalid(pattern) is { } why) throw k.Error(key, why);
    }

    static GroupConfig BindGroup(YamlKeys k)
    {
        string name = k.String("group")!;
        var members = k.Strings("task") ?? throw new TaskException($"{k.File}:1: group {SafeText.Quote(name)} needs 'task' (the list of its tasks)");
        var aggregates = new List<(string, bool)>();
        foreach (var a in k.MapList("aggregate_metric_list") ?? [])
        {
            string metric = a.String("metric") ?? throw new TaskException($"{a.File}: an entry of aggregate_metric_list has no 'metric'");
            string agg = a.String("aggregation") ?? "mean";
            if (agg != "mean") throw a.Error("aggregation", $"aggregation {SafeText.Quote(agg)} is not supported; groups average their tasks");
            aggregates.Add((metric, a.Bool("weight_by_size") ?? true));
            a.Node("filter_list");
            a.Finish();
        }
        string? alias = k.String("group_alias");
        k.Node("metadata");
        k.Finish();
        return new GroupConfig(name, k.File, members, aggregates, alias);
    }
}
