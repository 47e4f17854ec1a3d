using System.Text.Encodings.Web;
using System.Text.Json;
using QLoraNet.Formats;

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

    /// <summary>Cap on the whole file: a long run sampling a few prompts at every evaluation stays far below it.</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>Cap on one line: a prompt (sample prompt files allow 1 MiB lines) and its completion, JSON-escaped.</summary>
    public const int MaxLineBytes = 8 << 20;

    /// <summary>
    /// Reads the file back (on resume), bounded as every reader of a file from disk: a regular file of at most
    /// <see cref="MaxBytes"/>, lines of at most <see cref="MaxLineBytes"/>, strict UTF-8. A last line cut off by a kill
    /// during an append (no newline, not valid JSON) is dropped, as <see cref="MetricsLog"/> does; anything else
    /// wrong is a one-line error naming the file and the line.
    /// </summary>
    public static IReadOnlyList<SampleGeneration> Read(string path)
    {
        UserFile.RequireRegular(path, What);
        long length = new FileInfo(path).Length;
        if (length > MaxBytes)
            throw new InvalidDataException($"{path}: {length} bytes is more than the {MaxBytes}-byte limit for a {What}; move it aside to resume");
        bool endsWithNewline = length == 0 || UserFile.EndsWithNewline(path, What);
        var samples = new List<SampleGeneration>();
        (int Line, string Text)? pending = null;
        foreach (var line in UserFile.ReadLines(path, MaxLineBytes, What))
        {
            if (pending is { } p) Parse(p, cutOff: false);
            pending = line;
        }
        if (pending is { } last) Parse(last, cutOff: !endsWithNewline);
        return samples;

        void Parse((int Line, string Text) line, bool cutOff)
        {
            if (line.Text.Trim().Length == 0) return;
            string problem;
            try
            {
                using var doc = JsonDocument.Parse(line.Text, UserFile.JsonOptions);
                var r = doc.RootElement;
                if (r.ValueKind == JsonValueKind.Object
                    && r.TryGetProperty("step", out var step) && step.ValueKind == JsonValueKind.Number && step.TryGetInt32(out int s) && s >= 0
                    && r.TryGetProperty("prompt", out var prompt) && prompt.ValueKind == JsonValueKind.String
                    && r.TryGetProperty("completion", out var completion) && completion.ValueKind == JsonValueKind.String)
                {
                    samples.Add(new SampleGeneration(s, prompt.GetString()!, completion.GetString()!));
                    return;
                }
                problem = "expected {\"step\": N, \"prompt\": \"...\", \"completion\": \"...\"}";
            }
            catch (JsonException e)
            {
                if (cutOff) return; // a record cut short is never valid JSON: its closing brace comes last
                problem = $"not valid JSON ({SafeText.Clip(e.Message.Split(". ")[0], 160)})";
            }
            throw new InvalidDataException($"{path}:{line.Line}: {problem}; move the {What} aside to resume");
        }
    }

    const string What = "samples file";
}
