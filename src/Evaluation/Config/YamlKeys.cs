using QLoraNet.Formats;
using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Evaluation.Config;

/// <summary>
/// Located, typed reads from one YAML mapping of a task file (after <c>include:</c> merging, each key remembers the
/// file it came from), and the check that every key was one we read. Errors are one line: "file:line: problem".
/// </summary>
internal sealed class YamlKeys
{
    public sealed record Entry(YamlNode Key, YamlNode Value, string File);

    readonly IReadOnlyDictionary<string, Entry> entries;
    readonly HashSet<string> read = new();

    public YamlKeys(IReadOnlyDictionary<string, Entry> entries, string file, string section = "")
    {
        this.entries = entries;
        File = file;
        Section = section;
    }

    public string File { get; }
    public string Section { get; }
    public IEnumerable<string> Keys => entries.Keys;

    public bool Has(string key) => entries.ContainsKey(key) && !IsNull(entries[key].Value);

    public string Where(string key) => entries.TryGetValue(key, out var e) ? At(e.File, e.Value) : $"{File}:1";

    public static string At(string file, YamlNode node) => $"{file}:{node.Start.Line}";

    public TaskException Error(string key, string problem) => new($"{Where(key)}: {problem}");

    string Full(string key) => Section.Length == 0 ? key : $"{Section}.{key}";

    public YamlNode? Node(string key)
    {
        read.Add(key);
        return entries.TryGetValue(key, out var e) && !IsNull(e.Value) ? e.Value : null;
    }

    public string? String(string key)
    {
        var node = Node(key);
        if (node is null) return null;
        RefuseFunction(key, node);
        return node is YamlScalarNode s ? s.Value ?? "" : throw Error(key, $"{SafeText.Quote(Full(key))} must be a string; got {Show(node)}");
    }

    public int? Int(string key, int min)
    {
        var node = Node(key);
        if (node is null) return null;
        if (node is YamlScalarNode { Value: var v } && int.TryParse(v, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int i) && i >= min) return i;
        throw Error(key, $"{SafeText.Quote(Full(key))} must be an integer >= {min}; got {Show(node)}");
    }

    public double? Double(string key)
    {
        var node = Node(key);
        if (node is null) return null;
        if (node is YamlScalarNode { Value: var v } && double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d)) return d;
        throw Error(key, $"{SafeText.Quote(Full(key))} must be a number; got {Show(node)}");
    }

    public bool? Bool(string key)
    {
        var node = Node(key);
        if (node is null) return null;
        if (node is YamlScalarNode { Value: var v } && bool.TryParse(v, out bool b)) return b;
        throw Error(key, $"{SafeText.Quote(Full(key))} must be true or false; got {Show(node)}");
    }

    /// <summary>A string or a list of strings.</summary>
    public IReadOnlyList<string>? Strings(string key)
    {
        var node = Node(key);
        return node switch
        {
            null => null,
            YamlScalarNode s => [s.Value ?? ""],
            YamlSequenceNode seq => seq.Children.Select(c => c is YamlScalarNode s ? s.Value ?? ""
                : throw Error(key, $"{SafeText.Quote(Full(key))} must be a list of strings; got {Show(c)}")).ToArray(),
            _ => throw Error(key, $"{SafeText.Quote(Full(key))} must be a string or a list of strings; got {Show(node)}"),
        };
    }

    /// <summary>A nested mapping, read with the same rules.</summary>
    public YamlKeys? Map(string key)
    {
        var node = Node(key);
        if (node is null) return null;
        if (node is not YamlMappingNode m) throw Error(key, $"{SafeText.Quote(Full(key))} must be a mapping; got {Show(node)}");
        return new YamlKeys(Entries(m, entries[key].File), entries[key].File, Full(key));
    }

    /// <summary>A list of mappings (metric_list, filter_list).</summary>
    public IReadOnlyList<YamlKeys>? MapList(string key)
    {
        var node = Node(key);
        if (node is null) return null;
        if (node is not YamlSequenceNode seq) throw Error(key, $"{SafeText.Quote(Full(key))} must be a list; got {Show(node)}");
        string file = entries[key].File;
        return seq.Children.Select((c, i) => c is YamlMappingNode m ? new YamlKeys(Entries(m, file), file, $"{Full(key)}[{i}]")
            : throw new TaskException($"{At(file, c)}: each entry of {SafeText.Quote(Full(key))} must be a mapping; got {Show(c)}")).ToList();
    }

    /// <summary>Rejects keys nobody read: unknown ones with the valid list, the harness's unimplemented ones by name.</summary>
    public void Finish(IReadOnlyDictionary<string, string>? notImplemented = null)
    {
        foreach (var (name, e) in entries)
        {
            if (read.Contains(name)) continue;
            if (notImplemented != null && notImplemented.TryGetValue(name, out var why))
                throw new TaskException($"{At(e.File, e.Key)}: {SafeText.Quote(Full(name))} is lm-evaluation-harness's but not implemented here ({why})");
            string where = Section.Length == 0 ? "" : $" in {SafeText.Quote(Section)}";
            throw new TaskException($"{At(e.File, e.Key)}: unknown key {SafeText.Quote(Full(name))}; valid keys{where}: {string.Join(", ", read)}");
        }
    }

    public void RefuseFunction(string key, YamlNode node)
    {
        if (node.Tag.IsEmpty || node.Tag.Value != "!function") return;
        throw Error(key, $"'{Full(key)}: !function {(node as YamlScalarNode)?.Value}' runs Python, which is not available here; "
            + (key == "process_docs" ? $"name a built-in preprocessor instead ({string.Join(", ", Processing.DocPreprocessors.Names)})"
                : key == "process_results" ? $"name a built-in result processor instead ({string.Join(", ", Processing.ResultProcessors.Names)})"
                : "write it as a template over the row's fields (see src/Evaluation/Tasks/README.md)"));
    }

    public static Dictionary<string, Entry> Entries(YamlMappingNode map, string file)
    {
        var d = new Dictionary<string, Entry>();
        foreach (var (k, v) in map.Children)
        {
            string name = (k as YamlScalarNode)?.Value ?? k.ToString();
            if (d.ContainsKey(name)) throw new TaskException($"{At(file, k)}: key {SafeText.Quote(name)} appears twice");
            d[name] = new Entry(k, v, file);
        }
        return d;
    }

    public static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: YamlDotNet.Core.ScalarStyle.Plain, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    public static string Show(YamlNode node) => node switch
    {
        YamlScalarNode s => SafeText.Quote(s.Value ?? ""),
        YamlSequenceNode => "a list",
        YamlMappingNode => "a mapping",
        _ => node.NodeType.ToString(),
    };
}
