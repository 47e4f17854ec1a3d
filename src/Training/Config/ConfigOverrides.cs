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
    public static void Apply(YamlMappingNode root, IEnumerable<string> overrides, ConfigSource source)
    {
        foreach (var text in overrides)
        {
            int eq = text.IndexOf('=');
            if (eq <= 0) throw new ConfigException($"override '{text}': expected key=value, e.g. training.learning_rate=1e-4");
            string[] path = text[..eq].Trim().Split('.');
            if (path.Any(p => p.Length == 0)) throw new ConfigException($"override '{text}': empty key segment in '{text[..eq]}'");
            var value = ParseValue(text, text[(eq + 1)..]);
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
                    $"override '{text}': '{string.Join('.', path[..(i + 1)])}' is a value, not a section");
            }
            var leaf = new YamlScalarNode(path[^1]);
            if (!map.Children.ContainsKey(leaf)) source.MarkOverride(leaf, text);
            map.Children[leaf] = value;
        }
    }

    static YamlNode ParseValue(string text, string value)
    {
        if (value.Trim().Length == 0) return new YamlScalarNode("");
        try
        {
            var stream = new YamlStream();
            stream.Load(new StringReader(value));
            return stream.Documents.Count == 0 ? new YamlScalarNode("") : stream.Documents[0].RootNode;
        }
        catch (YamlException e)
        {
            throw new ConfigException($"override '{text}': value is not valid YAML ({e.Message}); quote it or use [a,b] for lists");
        }
    }

    static bool IsNull(YamlNode n) => n is YamlScalarNode { Style: ScalarStyle.Plain, Value: null or "" or "~" or "null" };
}
