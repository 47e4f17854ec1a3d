using System.CommandLine;
using System.Globalization;
using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Scoring;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Cli;

/// <summary>
/// `eval --tasks NAME|FILE[,..]`: benchmark tasks scored as lm-evaluation-harness scores them (src/Evaluation), on the
/// model the shared <see cref="ModelOptions"/> load (any base format, with an adapter). Prints a table of per-task and
/// group scores with standard errors and their average, or the results JSON (--json); --output writes the JSON file.
/// </summary>
public sealed class EvalTasksMode
{
    public Option<string?> Tasks { get; } = new("--tasks") { Description = "comma-separated task or group names (built-ins: sales_mc, arc_easy, arc_challenge, hellaswag, mmlu, mmlu_<subject>, truthfulqa_mc1, truthfulqa_mc2, winogrande, gsm8k, piqa, boolq) or task YAML files" };
    public Option<int?> Limit { get; } = new("--limit") { Description = "score only the first N rows of each task" };
    public Option<int?> NumFewshot { get; } = new("--num-fewshot") { Description = "few-shot examples per prompt (default: each task's num_fewshot)" };
    public Option<int> BatchSize { get; } = new("--batch-size") { Description = "sequences per forward for log-likelihoods", DefaultValueFactory = _ => 8 };
    public Option<string[]> TaskData { get; } = new("--task-data") { Description = "NAME=PATH: the local copy of a task's (or group's) dataset, e.g. arc_easy=data/ai2_arc; repeatable", AllowMultipleArgumentsPerToken = true };
    public Option<string?> Output { get; } = new("--output") { Description = "write the results JSON (lm-evaluation-harness layout) to this file" };
    public Option<int> FewshotSeed { get; } = new("--fewshot-seed") { Description = "seed of the few-shot draw", DefaultValueFactory = _ => 1234 };
    public Option<bool> LogSamples { get; } = new("--log-samples") { Description = "add every row's log-likelihoods or generation and scores to the results JSON (\"samples\")" };
    public Option<bool> ApplyChatTemplate { get; } = new("--apply-chat-template") { Description = "generative tasks: ask each prompt as a user message of the chat template (--chat-template) and generate the assistant's reply, as the harness's --apply_chat_template" };
    public Option<string> ChatTemplate { get; } = new("--chat-template") { Description = $"the template for --apply-chat-template: {ChatTemplates.Choices} (auto: the model's own)", DefaultValueFactory = _ => "auto" };

    public EvalTasksMode() => ChatTemplate.AcceptOnlyFromAmong(YamlNames.Choices<TemplateKind>().ToArray());

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Tasks, Limit, NumFewshot, BatchSize, TaskData, Output, FewshotSeed, LogSamples, ApplyChatTemplate, ChatTemplate })
            cmd.Options.Add(o);
    }

    public int Run(ParseResult parsed, string taskList, ModelOptions modelOptions, bool json, TextWriter stdout)
    {
        int batch = parsed.GetValue(BatchSize);
        if (batch < 1) throw new ArgumentException($"--batch-size {batch} must be at least 1");
        if (parsed.GetValue(Limit) is < 1) throw new ArgumentException($"--limit {parsed.GetValue(Limit)} must be at least 1");
        if (parsed.GetValue(NumFewshot) is < 0) throw new ArgumentException($"--num-fewshot {parsed.GetValue(NumFewshot)} must be 0 or more");
        if (parsed.GetValue(FewshotSeed) < 0) throw new ArgumentException("--fewshot-seed must be 0 or more");
        var dataPaths = ParseTaskData(parsed.GetValue(TaskData) ?? []);
        // Task files are read and checked before the model loads: a typo fails in a second, not after the weights.
        var selection = TaskCatalog.BuiltIn().Resolve(taskList.Split(','));
        var options = new EvalOptions(parsed.GetValue(Limit), parsed.GetValue(NumFewshot), batch, (ulong)parsed.GetValue(FewshotSeed));
        string modelDir = parsed.GetValue(modelOptions.Model)!;
        if (parsed.GetValue(ApplyChatTemplate))
        {
            YamlNames.TryParse(parsed.GetValue(ChatTemplate)!, out TemplateKind kind);
            options = options with { Chat = ChatTemplatePrompt.For(kind, TextTokenizers.Load(modelDir), TokenizerConfigJson.Load(modelDir)) };
        }

        using var loaded = modelOptions.Load(parsed);
        var model = new LlamaScoringModel(loaded.Model, loaded.Tokenizer);
        string format = QuantizedCheckpoint.StoredFormat(parsed.GetValue(modelOptions.Model)!)?.ToString() ?? loaded.Format.ToString();
        var renderer = new EvalProgressRenderer(stdout, quiet: json);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var results = EvalRunner.Run(model, selection, options, dataPaths, renderer);
        renderer.Done();

        var config = new Dictionary<string, object?>
        {
            ["model"] = parsed.GetValue(modelOptions.Model), ["adapter"] = parsed.GetValue(modelOptions.Adapter),
            ["quantization"] = format, ["device"] = loaded.Device.ToString(), ["dtype"] = loaded.ComputeDType.ToString(),
            ["batch_size"] = batch, ["limit"] = options.Limit, ["num_fewshot"] = options.NumFewshot,
            ["fewshot_seed"] = options.FewshotSeed, ["apply_chat_template"] = options.Chat?.Name, ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
        };
        var doc = EvalResultsJson.ToJson(results, config, parsed.GetValue(LogSamples));
        if (parsed.GetValue(Output) is { } output) EvalResultsJson.Write(output, doc);
        if (json) stdout.WriteLine(doc.ToJsonString());
        else
        {
            WriteTable(stdout, results);
            stdout.WriteLine($"model {parsed.GetValue(modelOptions.Model)} (base {format}{(parsed.GetValue(modelOptions.Adapter) is { } a ? $", adapter {a}" : "")}), {clock.Elapsed.TotalSeconds:F1} s"
                + (parsed.GetValue(Output) is { } o ? $"; results in {o}" : ""));
        }
        return 0;
    }

    static Dictionary<string, string> ParseTaskData(IEnumerable<string> entries)
    {
        var map = new Dictionary<string, string>();
        foreach (string e in entries)
        {
            int eq = e.IndexOf('=');
            if (eq <= 0 || eq == e.Length - 1) throw new ArgumentException($"--task-data '{e}' must read NAME=PATH (a task or group name, then the local data directory or file)");
            map[e[..eq]] = e[(eq + 1)..];
        }
        return map;
    }

    static void WriteTable(TextWriter w, EvalResults r)
    {
        string F(double v) => double.IsFinite(v) ? v.ToString("F4", CultureInfo.InvariantCulture) : "-";
        string Se(double? v) => v is { } x && double.IsFinite(x) ? "± " + x.ToString("F4", CultureInfo.InvariantCulture) : "± N/A";
        w.WriteLine($"{"task",-28} {"n-shot",6}  {"metric",-28} {"value",7}  {"stderr",9}  {"rows",6}");
        foreach (var t in r.Tasks)
            foreach (var (key, s) in t.Metrics)
                w.WriteLine($"{t.Name,-28} {t.NumFewshot,6}  {MetricNames.Display(key),-28} {F(s.Value),7}  {Se(s.Stderr),9}  {s.Count,6}");
        foreach (var g in r.Groups)
            foreach (var (key, s) in g.Metrics)
                w.WriteLine($"{g.Name + " (group)",-28} {"",6}  {MetricNames.Display(key),-28} {F(s.Value),7}  {Se(s.Stderr),9}  {s.Count,6}");
        if (r.Requested.Count > 1)
        {
            var avg = r.Average();
            w.WriteLine($"average of {string.Join(", ", r.Headlines().Select(h => $"{h.Name} {MetricNames.Display(h.Metric)}"))}: {F(avg.Value)} {Se(avg.Stderr)}");
        }
    }
}

/// <summary>Draws evaluation progress: on a terminal a status line rewritten per batch (done/total, ETA); otherwise
/// one line when each task's requests are done. Nothing with --json (stdout is the JSON).</summary>
sealed class EvalProgressRenderer(TextWriter stdout, bool quiet) : IProgress<EvalProgress>
{
    readonly bool live = ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected;
    int width;

    public void Report(EvalProgress p)
    {
        if (quiet) return;
        string eta = p.Eta is { } e ? $", ETA {e:h\\:mm\\:ss}" : "";
        string line = $"{p.Task}: {p.Phase} {p.Done}/{p.Total} ({p.Elapsed.TotalSeconds:F1} s{eta})";
        if (live)
        {
            stdout.Write("\r" + line.PadRight(width));
            width = line.Length;
            if (p.Done == p.Total) { stdout.WriteLine(); width = 0; }
        }
        else if (p.Done == p.Total) stdout.WriteLine(line);
    }

    public void Done()
    {
        if (live && width > 0) stdout.WriteLine();
        width = 0;
    }
}
