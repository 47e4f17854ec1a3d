using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// Typed reads from a Hugging Face config.json, for the family parsers: a missing required field or a value of
/// the wrong type is one line naming the file and the key. Absent optional fields give null.
/// </summary>
public sealed class HfConfigJson
{
    HfConfigJson(JsonElement root, string path)
    {
        Root = root;
        Path = path;
    }

    public JsonElement Root { get; }

    /// <summary>The file, for messages.</summary>
    public string Path { get; }

    public static HfConfigJson Load(string pathOrDir)
    {
        string path = Directory.Exists(pathOrDir) ? System.IO.Path.Combine(pathOrDir, ModelArchitecture.ConfigFileName) : pathOrDir;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found (a Hugging Face model directory needs a config.json)", path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return Parse(doc.RootElement.Clone(), path);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message.Split('.')[0]})");
        }
    }

    public static HfConfigJson Parse(JsonElement root, string path) =>
        root.ValueKind == JsonValueKind.Object ? new HfConfigJson(root, path) : throw new InvalidDataException($"{path}: expected a JSON object");

    /// <summary>True when config.json has <paramref name="key"/> at all, even as null (a null window differs from a
    /// missing one, which takes the config class's default).</summary>
    public bool Has(string key) => Root.TryGetProperty(key, out _);

    public int RequiredInt(string key) => Int(key) ?? throw new InvalidDataException($"{Path}: missing required field '{key}'");

    public int? Int(string key) => Int(Root, key);

    public double? Double(string key) => Double(Root, key);

    public bool? Bool(string key) =>
        Root.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    public string? String(string key) => String(Root, key);

    /// <summary>A nested object (rope_scaling, rope_parameters), or null.</summary>
    public JsonElement? Object(string key) => Root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Object ? v : null;

    /// <summary>An id or a list of ids (eos_token_id may be either); empty when absent.</summary>
    public IReadOnlyList<int> Ids(string key)
    {
        if (!Root.TryGetProperty(key, out var v)) return [];
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int one)) return [one];
        if (v.ValueKind == JsonValueKind.Array)
            return v.EnumerateArray().Select(x => x.TryGetInt32(out int i) ? i
                : throw new InvalidDataException($"{Path}: '{key}' must hold integer token ids, got {x.GetRawText()}")).ToList();
        return [];
    }

    public IReadOnlyList<string> Strings(string key) =>
        Root.TryGetProperty(key, out var a) && a.ValueKind == JsonValueKind.Array
            ? a.EnumerateArray().Select(x => x.GetString() ?? "").ToList() : [];

    public static int? Int(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

    public static double? Double(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

    public static string? String(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
