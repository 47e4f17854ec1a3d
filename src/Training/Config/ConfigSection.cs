using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Typed, located reads from one YAML mapping of the config (the root or a section such as <c>lora</c>).
/// Every read registers its key as valid, so that <see cref="Finish"/> can reject the keys nobody read and list the
/// valid ones. Absent keys and YAML nulls (<c>~</c>, <c>null</c>, empty) give the default. Numbers are parsed with
/// the invariant culture; quoted numbers are accepted.
/// </summary>
internal sealed class ConfigSection
{
    readonly ConfigSource source;
    readonly YamlMappingNode? map;
    readonly YamlNode? anchor; // where to point when a key is absent: the section's key, or the document
    readonly List<string> known = [];

    public ConfigSection(ConfigSource source, string path, YamlMappingNode? map, YamlNode? anchor)
    {
        this.source = source;
        this.map = map;
        this.anchor = anchor ?? map;
        Path = path;
    }

    /// <summary>Dotted path of this section ("" for the root).</summary>
    public string Path { get; }

    public string Full(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    public ConfigSection Section(string key)
    {
        var node = Take(key);
        if (node == null) return new ConfigSection(source, Full(key), null, KeyNode(key) ?? anchor);
        if (node is not YamlMappingNode m) throw Bad(node, key, "a mapping of keys (a section)");
        return new ConfigSection(source, Full(key), m, KeyNode(key));
    }

    /// <summary>
    /// A key that is either one scalar (<c>quantization: nf4-dq</c>) or a section of keys
    /// (<c>quantization: {type: nf4, double_quant: true}</c>). Absent: no scalar and an empty section.
    /// </summary>
    public (string? Scalar, ConfigSection Section) ScalarOrSection(string key, string expected)
    {
        var node = Take(key);
        return node switch
        {
            null => (null, new ConfigSection(source, Full(key), null, KeyNode(key) ?? anchor)),
            YamlScalarNode s => (s.Value ?? "", new ConfigSection(source, Full(key), null, s)),
            YamlMappingNode m => (null, new ConfigSection(source, Full(key), m, KeyNode(key))),
            _ => throw Bad(node, key, expected),
        };
    }

    /// <summary>An error located at this section's own node (its key, or the scalar it holds).</summary>
    public ConfigException Error(string message) => source.Error(anchor, message);

    public string? OptionalString(string key) => Take(key) switch
    {
        null => null,
        YamlScalarNode s => s.Value ?? "",
        var n => throw Bad(n, key, "a string"),
    };

    public string RequiredString(string key)
    {
        var value = OptionalString(key);
        if (value == null) source.Missing(anchor, Full(key));
        else if (value.Trim().Length == 0) throw Bad(ValueNode(key)!, key, "a non-empty string");
        return value ?? "";
    }

    public bool Bool(string key, bool fallback) => OptionalBool(key) ?? fallback;

    public bool? OptionalBool(string key) => Take(key) switch
    {
        null => null,
        YamlScalarNode { Value: var v } when bool.TryParse(v, out var b) => b,
        var n => throw Bad(n, key, "true or false"),
    };

    public int Int(string key, int fallback, int min = int.MinValue, int max = int.MaxValue) =>
        OptionalInt(key, min, max) ?? fallback;

    public int? OptionalInt(string key, int min = int.MinValue, int max = int.MaxValue)
    {
        var node = Take(key);
        if (node == null) return null;
        return ParseInt(node, key, min, max);
    }

    public double Double(string key, double fallback, double min = double.MinValue, double max = double.MaxValue,
        bool minExclusive = false) => OptionalDouble(key, min, max, minExclusive) ?? fallback;

    public double? OptionalDouble(string key, double min = double.MinValue, double max = double.MaxValue,
        bool minExclusive = false)
    {
        var node = Take(key);
        if (node == null) return null;
        string range = Range(min, max, minExclusive);
        if (node is not YamlScalarNode { Value: var v }
            || !double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d)
            || !double.IsFinite(d))
            throw Bad(node, key, "a number" + range);
        if (d < min || (minExclusive && d == min) || d > max) throw Bad(node, key, "a number" + range);
        return d;
    }

    public T Enum<T>(string key, T fallback) where T : struct, Enum
    {
        var node = Take(key);
        if (node == null) return fallback;
        if (node is YamlScalarNode { Value: var v } && YamlNames.TryParse<T>(v ?? "", out var value)) return value;
        throw source.Error(node, $"'{Full(key)}' must be one of {string.Join(", ", YamlNames.Choices<T>())}; got {Show(node)}");
    }

    /// <summary>A list of strings; a single scalar counts as a one-element list (<c>train: a.jsonl</c>).</summary>
    public IReadOnlyList<string>? OptionalStringList(string key)
    {
        var node = Take(key);
        return node switch
        {
            null => null,
            YamlScalarNode s => [s.Value ?? ""],
            YamlSequenceNode seq => seq.Children.Select(c => c is YamlScalarNode s ? s.Value ?? ""
                : throw Bad(c, key, "a list of strings")).ToArray(),
            _ => throw Bad(node, key, "a string or a list of strings"),
        };
    }

    /// <summary>A key that is either one string (<c>sample_prompts: prompts.txt</c>) or a list of strings.</summary>
    public (string? Scalar, IReadOnlyList<string>? List) OptionalStringOrList(string key)
    {
        var node = Take(key);
        return node switch
        {
            null => (null, null),
            YamlScalarNode s => (s.Value ?? "", null),
            YamlSequenceNode seq => (null, seq.Children.Select(c => c is YamlScalarNode s ? s.Value ?? ""
                : throw Bad(c, key, "a list of strings")).ToArray()),
            _ => throw Bad(node, key, "a file name or a list of strings"),
        };
    }

    /// <summary>Like <see cref="OptionalStringList"/>, but absence is reported (after unknown keys) as missing.</summary>
    public IReadOnlyList<string>? RequiredStringList(string key)
    {
        var list = OptionalStringList(key);
        if (list == null) source.Missing(anchor, Full(key));
        return list;
    }

    public IReadOnlyList<int>? OptionalIntList(string key, int min = int.MinValue, int max = int.MaxValue)
    {
        var node = Take(key);
        return node switch
        {
            null => null,
            YamlScalarNode s => [ParseInt(s, key, min, max)],
            YamlSequenceNode seq => seq.Children.Select(c => ParseInt(c, key, min, max)).ToArray(),
            _ => throw Bad(node, key, "a list of integers"),
        };
    }

    /// <summary>An error located at the key's value (or at the section when the key is absent).</summary>
    public ConfigException ErrorAt(string key, string message) => source.Error(ValueNode(key) ?? anchor, message);

    /// <summary>Rejects any key of this mapping that no read asked for, listing the valid ones.</summary>
    public void Finish()
    {
        if (map == null) return;
        foreach (var (k, _) in map.Children)
        {
            string name = (k as YamlScalarNode)?.Value ?? k.ToString();
            if (!known.Contains(name))
            {
                string where = Path.Length == 0 ? "at the top level" : $"in '{Path}'";
                throw source.Error(k, $"unknown key {QLoraNet.Formats.SafeText.Quote(Full(name))}; valid keys {where}: {string.Join(", ", known)}");
            }
        }
    }

    int ParseInt(YamlNode node, string key, int min, int max)
    {
        if (node is YamlScalarNode { Value: var v }
            && long.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l)
            && l >= min && l <= max)
            return (int)l;
        throw Bad(node, key, "an integer" + Range(min, max, false));
    }

    YamlNode? Take(string key)
    {
        if (!known.Contains(key)) known.Add(key);
        var node = ValueNode(key);
        return node is YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: null or "" or "~" or "null" or "Null" or "NULL" }
            ? null : node;
    }

    YamlNode? ValueNode(string key) =>
        map?.Children.FirstOrDefault(kv => kv.Key is YamlScalarNode { Value: var k } && k == key).Value;

    YamlNode? KeyNode(string key) =>
        map?.Children.Keys.FirstOrDefault(k => k is YamlScalarNode { Value: var v } && v == key);

    ConfigException Bad(YamlNode node, string key, string expected) =>
        source.Error(node, $"'{Full(key)}' must be {expected}; got {Show(node)}");

    static string Show(YamlNode node) => node switch
    {
        YamlScalarNode s => QLoraNet.Formats.SafeText.Quote(s.Value ?? ""),
        YamlSequenceNode => "a list",
        YamlMappingNode => "a mapping",
        _ => node.NodeType.ToString(),
    };

    static string Range(double min, double max, bool minExclusive)
    {
        bool hasMin = min > int.MinValue && min > double.MinValue, hasMax = max < int.MaxValue && max < double.MaxValue;
        string lo = minExclusive ? "> " : ">= ";
        return (hasMin, hasMax) switch
        {
            (true, true) => $" in {(minExclusive ? "(" : "[")}{Fmt(min)}, {Fmt(max)}]",
            (true, false) => $" {lo}{Fmt(min)}",
            (false, true) => $" <= {Fmt(max)}",
            _ => "",
        };
    }

    static string Fmt(double d) => d.ToString(CultureInfo.InvariantCulture);
}
