using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Where a YAML node came from, for error messages: a line of the config file, or a <c>key=value</c> override from
/// the command line (those nodes are parsed from the override text, so their own line numbers mean nothing).
/// Also collects "missing required key" errors, which are reported only after unknown keys: a misspelt key
/// (<c>modle:</c>) is the real cause of the missing one (<c>model.path</c>).
/// </summary>
internal sealed class ConfigSource(string file)
{
    readonly Dictionary<YamlNode, string> overrideText = new(ReferenceEqualityComparer.Instance);
    readonly List<string> missing = [];

    public string File { get; } = file;

    public void MarkOverride(YamlNode node, string text)
    {
        foreach (var n in node.AllNodes) overrideText[n] = text;
    }

    /// <summary>"configs/x.yaml:12" or "override 'lora.r=abc'" (the node's start; line 1 when there is none).</summary>
    public string Where(YamlNode? node) =>
        node != null && overrideText.TryGetValue(node, out var text) ? $"override '{text}'"
        : $"{File}:{(node == null ? 1 : node.Start.Line)}";

    public ConfigException Error(YamlNode? node, string message) => new($"{Where(node)}: {message}");

    public void Missing(YamlNode? near, string key) => missing.Add($"{Where(near)}: missing required key '{key}'");

    public void ThrowIfMissing()
    {
        if (missing.Count > 0) throw new ConfigException(missing[0]);
    }
}
