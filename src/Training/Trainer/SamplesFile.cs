using System.Text.Encodings.Web;
using System.Text.Json;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// <c>samples.jsonl</c> in the output directory: one line per sample generation, <c>{"step", "prompt", "completion"}</c>,
/// appended as the run goes; on resume, lines past the checkpoint's step are dropped first (as <see cref="MetricsLog"/>).
/// </summary>
public sealed class SamplesFile
{
    public const string FileName = "samples.jsonl";
    static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public string Path { get; }

    public SamplesFile(string path, int keepThroughStep)
    {
        Path = path;
        var kept = keepThroughStep > 0 && File.Exists(path)
            ? Read(path).Where(s => s.Step <= keepThroughStep).Select(Line).ToList()
            : [];
        Formats.AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
    }

    public void Append(IEnumerable<SampleGeneration> samples) =>
        File.AppendAllText(Path, string.Concat(samples.Select(s => Line(s) + "\n")));

    static string Line(SampleGeneration s) =>
        JsonSerializer.Serialize(new Dictionary<string, object> { ["step"] = s.Step, ["prompt"] = s.Prompt, ["completion"] = s.Completion }, Json);

    public static IReadOnlyList<SampleGeneration> Read(string path) => File.ReadLines(path).Where(l => l.Trim().Length > 0).Select(l =>
    {
        using var doc = JsonDocument.Parse(l);
        var r = doc.RootElement;
        return new SampleGeneration(r.GetProperty("step").GetInt32(), r.GetProperty("prompt").GetString()!, r.GetProperty("completion").GetString()!);
    }).ToList();
}
