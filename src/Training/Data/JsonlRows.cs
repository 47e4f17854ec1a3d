using System.Text.Json;

namespace QLoraNet.Training.Data;

/// <summary>
/// The rows of a JSON Lines file (one JSON object per line; blank lines are ignored). A line that is not a JSON
/// object is a <see cref="BadRowException"/> naming file and line, raised when that row is reached.
/// </summary>
public static class JsonlRows
{
    public static IEnumerable<Func<RowParser.Row>> Read(string path)
    {
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
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
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new BadRowException($"{origin}: not valid JSON ({e.Message.Split(". ")[0]})");
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
