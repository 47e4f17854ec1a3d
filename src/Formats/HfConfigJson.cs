using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// Typed reads from a Hugging Face config.json, for the family parsers: a missing required field or a value of
/// the wrong type is one line naming the file and the key (the value escaped and clipped). Absent optional fields
/// (or JSON null) give null. The file is read through <see cref="UserFile"/>, so its size and nesting are bounded.
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
        // Bounded: a regular file, size-capped, strict UTF-8, nesting and duplicate keys checked (UserFile).
        using var doc = UserFile.ReadJson(path, what: "model config");
        return Parse(doc.RootElement.Clone(), path);
    }

    public static HfConfigJson Parse(JsonElement root, string path) =>
        root.ValueKind == JsonValueKind.Object ? new HfConfigJson(root, path) : throw new InvalidDataException($"{path}: expected a JSON object");

    /// <summary>True when config.json has <paramref name="key"/> at all, even as null (a null window differs from a
    /// missing one, which takes the config class's default).</summary>
    public bool Has(string key) => Root.TryGetProperty(key, out _);

    public int RequiredInt(string key) => Int(key) ?? throw new InvalidDataException($"{Path}: missing required field '{key}'");

    /// <summary>An integer field; null when absent or JSON null, an error naming the field when it is anything else
    /// (a float, a string, a number past 2^31), rather than silently taking the default.</summary>
    public int? Int(string key)
    {
        if (!Root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        throw new InvalidDataException($"{Path}: '{key}' must be an integer below 2^31, got {SafeText.Clip(v.GetRawText(), 40)}");
    }

    /// <summary>A number field; null when absent or JSON null, an error naming the field when it is not a finite number.</summary>
    public double? Double(string key) => Double(Root, key, key);

    /// <summary>A number that must be positive and finite (rope_theta, rms_norm_eps); null when absent.</summary>
    public double? Positive(string key) => Positive(Root, key, key);

    /// <summary><see cref="Positive(string)"/> inside a nested object; <paramref name="field"/> names it in messages
    /// ("rope_parameters.rope_theta").</summary>
    public double? Positive(JsonElement o, string key, string field) =>
        Double(o, key, field) is not { } d ? null
            : d > 0 ? d : throw new InvalidDataException($"{Path}: '{field}' must be a positive finite number, got {d}");

    /// <summary><see cref="Double(string)"/> inside a nested object; <paramref name="field"/> names it in messages.</summary>
    public double? Double(JsonElement o, string key, string field)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d)) return d;
        throw new InvalidDataException($"{Path}: '{field}' must be a finite number, got {SafeText.Clip(v.GetRawText(), 40)}");
    }

    public bool? Bool(string key) =>
        Root.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    public string? String(string key) => String(Root, key);

    /// <summary>A nested object (rope_scaling, rope_parameters), or null.</summary>
    public JsonElement? Object(string key) => Root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Object ? v : null;

    /// <summary>A token id field (bos_token_id): null when absent, else an id below <paramref name="vocabSize"/>.</summary>
    public int? TokenId(string key, int vocabSize) =>
        Root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? CheckedId(v, key, vocabSize) : null;

    /// <summary>An id or a list of ids (eos_token_id may be either), each below <paramref name="vocabSize"/>; empty
    /// when absent.</summary>
    public IReadOnlyList<int> TokenIds(string key, int vocabSize)
    {
        if (!Root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return [];
        if (v.ValueKind == JsonValueKind.Array) return v.EnumerateArray().Select(x => CheckedId(x, key, vocabSize)).ToList();
        return [CheckedId(v, key, vocabSize)];
    }

    int CheckedId(JsonElement v, string key, int vocabSize) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) && id >= 0 && id < vocabSize ? id
            : throw new InvalidDataException($"{Path}: '{key}' {SafeText.Clip(v.GetRawText(), 40)} is not a token id below vocab_size {vocabSize}");

    /// <summary>A list of strings (architectures); an entry of another type is kept as its JSON text, so a message
    /// naming it shows what was there.</summary>
    public IReadOnlyList<string> Strings(string key) =>
        Root.TryGetProperty(key, out var a) && a.ValueKind == JsonValueKind.Array
            ? a.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : x.GetRawText()).ToList() : [];

    public static string? String(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
