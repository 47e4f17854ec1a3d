using YamlDotNet.RepresentationModel;
using QLoraNet.Evaluation;

namespace QLoraNet.Training.Config;

/// <summary>
/// Benchmark tasks scored during training (section <c>eval:</c>): at every <c>training.eval_every</c> steps, before
/// the first step and at the end, the tasks run on the model being trained (base + current adapter) and their scores
/// go to metrics.csv and the final summary, so a domain fine-tune shows what it gains and what it costs on general
/// tasks. Task names resolve when the config is read (a typo fails at once). Defaults: no tasks.
/// </summary>
/// <param name="Tasks">task or group names, or task YAML files, as <c>eval --tasks</c> takes them</param>
/// <param name="Limit">score only the first N rows of each task (keeps mid-run evaluations short)</param>
/// <param name="TaskData">NAME=PATH entries, as <c>--task-data</c></param>
public sealed record EvalConfig(
    IReadOnlyList<string> Tasks,
    int? Limit = null,
    int BatchSize = 8,
    int? NumFewshot = null,
    IReadOnlyList<string>? TaskData = null)
{
    public static readonly EvalConfig None = new([]);

    /// <summary>NAME=PATH entries as a map.</summary>
    public IReadOnlyDictionary<string, string> TaskDataMap =>
        (TaskData ?? []).ToDictionary(e => e[..e.IndexOf('=')], e => e[(e.IndexOf('=') + 1)..]);

    internal static EvalConfig Bind(ConfigSection s)
    {
        var c = new EvalConfig(
            s.OptionalStringList("tasks") ?? [],
            s.OptionalInt("limit", 1),
            s.Int("batch_size", 8, 1),
            s.OptionalInt("num_fewshot", 0),
            s.OptionalStringList("task_data"));
        s.Finish();
        foreach (string e in c.TaskData ?? [])
            if (e.IndexOf('=') is <= 0 || e.EndsWith('='))
                throw s.ErrorAt("task_data", $"'{s.Full("task_data")}' entries must read NAME=PATH; got {QLoraNet.Formats.SafeText.Quote(e, 200)}");
        if (c.Tasks.Count > 0)
        {
            try { TaskCatalog.BuiltIn().Resolve(c.Tasks); }
            catch (TaskException e) { throw s.ErrorAt("tasks", $"'{s.Full("tasks")}': {QLoraNet.Formats.SafeText.Line(e.Message, 400)}"); }
        }
        return c;
    }

    internal YamlMappingNode? ToYaml() => Tasks.Count == 0 ? null : YamlOut.Map(
        ("tasks", YamlOut.List(Tasks)), ("limit", YamlOut.Scalar(Limit)), ("batch_size", YamlOut.Scalar(BatchSize)),
        ("num_fewshot", YamlOut.Scalar(NumFewshot)), ("task_data", TaskData is null ? null : YamlOut.List(TaskData)));
}
