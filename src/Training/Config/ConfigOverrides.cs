using QLoraNet.Formats;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Command-line overrides <c>dotted.key=value</c> applied to the YAML tree before binding, so they meet exactly
/// the same checks as the file. The value is parsed as a YAML flow value: <c>training.learning_rate=1e-4</c>,
/// <c>lora.target_modules=[q_proj,v_proj]</c>, <c>training.max_steps=null</c> (back to the default).
/// Missing sections on the path are created; errors point at the override text instead of a file line.
/// </summary>
internal static class ConfigOverrides
{
    /// <summary>An override is a key and a short value; longer text is refused before it is parsed.</summary>
    public const int MaxChars = 64 * 1024;

    public static void Apply(YamlMappingNode root, IEnumerable<string> overrides, ConfigSource source)
    {
        foreach (var raw in overrides)
        {
            if (raw.Length > MaxChars)
                throw new ConfigException($"override {QLoraNet.Formats.SafeText.Quote(raw)}: {raw.Length} characters is more than an override may hold ({MaxChars})");
            string text = QLoraNet.Formats.SafeText.Clip(raw, 80);  // messages quote it: escaped and short
            int eq = raw.IndexOf('=');
            if (eq <= 0) throw new ConfigException($"override '{text}': expected key=value, e.g. training.learning_rate=1e-4");
            string[] path = raw[..eq].Trim().Split('.');
            if (path.Any(p => p.Length == 0)) throw new ConfigException($"override '{text}': empty key segment in {QLoraNet.Formats.SafeText.Quote(raw[..eq])}");
            if (path.Length > BoundedYaml.MaxDepth) throw new ConfigException($"override '{text}': key nested more than {BoundedYaml.MaxDepth} levels deep");
            var value = ParseValue(text, raw[(eq + 1)..]);
            source.MarkOverride(value, text);

            var map = root;
            for (int i = 0; i < path.Length - 1; i++)
            {
                var key = new YamlScalarNode(path[i]);
                if (!map.Children.TryGetValue(key, out var child) || IsNull(child))
                {
                    child = new YamlMappingNode();
                    source.MarkOverride(key, text);
                    map.Children[key] = child;
                }
                map = child as YamlMappingNode ?? throw new ConfigException(
                    $"override '{text}': {QLoraNet.Formats.SafeText.Quote(string.Join('.', path[..(i + 1)]))} is a value, not a section");
            }
            var leaf = new YamlScalarNode(path[^1]);
            if (!map.Children.ContainsKey(leaf)) source.MarkOverride(leaf, text);
            map.Children[leaf] = value;
        }
    }

    static YamlNode ParseValue(string text, string value)
    {
        if (value.Trim().Length == 0) return new YamlScalarNode("");
        var stream = BoundedYaml.Load(value, _ => $"override '{text}'", m => new ConfigException(m));
        return stream.Documents.Count == 0 ? new YamlScalarNode("") : stream.Documents[0].RootNode;
    }

    static bool IsNull(YamlNode n) => n is YamlScalarNode { Style: ScalarStyle.Plain, Value: null or "" or "~" or "null" };
}
