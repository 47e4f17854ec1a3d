using System.Text.Json;
using QLoraNet.Formats;

namespace QLoraNet.Evaluation.Data;

/// <summary>JSON lines (one object per line, blank lines skipped) or a file holding one JSON array of objects.</summary>
internal static class JsonDocs
{
    /// <summary>Bounds for a file from disk (issue 11): the whole file when it is one array, one line of JSON lines.</summary>
    const long MaxFileBytes = 1L << 30;
    const int MaxLineBytes = 16 << 20;

    public static List<Doc> Read(string path) => TaskException.Reading(path, () =>
    {
        string text = UserFile.ReadText(path, MaxFileBytes, "task data file");
        return text.TrimStart().StartsWith('[') ? ReadArray(path, text) : ReadLines(path);
    });

    static List<Doc> ReadLines(string path)
    {
        var docs = new List<Doc>();
        foreach (var (line, raw) in UserFile.ReadLines(path, MaxLineBytes, "task data file"))
        {
            if (raw.Trim().Length == 0) continue;
            docs.Add(ToDoc(Parse(raw, $"{path}:{line}"), $"{path}:{line}"));
        }
        return docs;
    }

    static List<Doc> ReadArray(string path, string text)
    {
        using var doc = Parse(text, path);
        if (doc.RootElement.ValueKind != JsonValueKind.Array) throw new TaskException($"{path}: expected JSON lines or one array of objects");
        return doc.RootElement.EnumerateArray().Select((e, i) => ToDoc(e, $"{path} item {i}")).ToList();
    }

    static JsonDocument Parse(string text, string where)
    {
        try { return JsonDocument.Parse(text); }
        catch (JsonException e) { throw new TaskException($"{where}: not valid JSON ({QLoraNet.Formats.SafeText.Clip(e.Message.Split('.')[0], 160)})"); }
    }

    static Doc ToDoc(JsonDocument d, string where)
    {
        using (d) return ToDoc(d.RootElement, where);
    }

    static Doc ToDoc(JsonElement e, string where)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new TaskException($"{where}: a row must be a JSON object, got {e.ValueKind.ToString().ToLowerInvariant()}");
        var fields = (Dictionary<string, object?>)PythonValues.Normalize(e.Clone())!;
        return new Doc(fields, where);
    }
}
