using System.Text.Json;
using QLoraNet.Formats;

namespace QLoraNet.Training.Data;

/// <summary>
/// The rows of a JSON Lines file (one JSON object per line; blank lines are ignored). A line that is not a JSON
/// object is a <see cref="BadRowException"/> naming file and line, raised when that row is reached. The file is
/// streamed with a cap on the line length (<see cref="MaxLineBytes"/>), so one endless line fails at once instead
/// of filling memory.
/// </summary>
public static class JsonlRows
{
    /// <summary>The longest row accepted (bytes): far above any conversation a model with a 100k context could train on.</summary>
    public const int MaxLineBytes = 16 << 20;

    public static IEnumerable<Func<RowParser.Row>> Read(string path)
    {
        foreach (var (lineNumber, line) in UserFile.ReadLines(path, MaxLineBytes, "JSONL data file"))
        {
            if (line.Trim().Length == 0) continue;
            string origin = $"{path}:{lineNumber}";
            string text = line;
            yield return () => Parse(origin, text);
        }
    }

    static RowParser.Row Parse(string origin, string line)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line, UserFile.JsonOptions);
        }
        catch (JsonException e)
        {
            throw new BadRowException($"{origin}: not valid JSON ({SafeText.Clip(e.Message.Split(". ")[0], 120)})");
        }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new BadRowException($"{origin}: a JSONL row must be a JSON object {{...}}; got {doc.RootElement.ValueKind}");
        return new JsonRow(origin, doc.RootElement);
    }

    sealed class JsonRow(string origin, JsonElement obj) : RowParser.Row
    {
        public string Origin => origin;

        public IReadOnlyList<string> FieldNames => obj.EnumerateObject().Select(p => p.Name).ToArray();

        public string? String(string name) => !obj.TryGetProperty(name, out var v) ? null : v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False => v.GetRawText(),
            _ => null,
        };

        public JsonElement? Json(string name) => obj.TryGetProperty(name, out var v) ? v : null;
    }
}
