using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>Builds the YAML nodes of <see cref="TrainConfig.ToYaml"/>: invariant-culture scalars, flow-style lists.</summary>
internal static class YamlOut
{
    /// <summary>A mapping in the given key order; entries whose node is C# null are left out.</summary>
    public static YamlMappingNode Map(params (string Key, YamlNode? Value)[] entries)
    {
        var map = new YamlMappingNode();
        foreach (var (k, v) in entries)
            if (v != null) map.Add(k, v);
        return map;
    }

    public static YamlNode Scalar(string? s) => s == null ? new YamlScalarNode("null")
        : new YamlScalarNode(s) { Style = NeedsQuotes(s) ? ScalarStyle.DoubleQuoted : ScalarStyle.Any };

    public static YamlNode Scalar(int? v) => new YamlScalarNode(v?.ToString(CultureInfo.InvariantCulture) ?? "null");

    public static YamlNode Scalar(double? v) => new YamlScalarNode(v?.ToString("R", CultureInfo.InvariantCulture) ?? "null");

    public static YamlNode Scalar(bool v) => new YamlScalarNode(v ? "true" : "false");

    public static YamlNode Scalar<T>(T v) where T : struct, Enum => new YamlScalarNode(YamlNames.Of(v));

    public static YamlNode List<T>(IEnumerable<T>? items) => items == null ? new YamlScalarNode("null")
        : new YamlSequenceNode(items.Select(i => i is int n ? Scalar(n) : Scalar(i?.ToString()))) { Style = SequenceStyle.Flow };

    // A plain scalar that YAML would read as something other than this string (null, bool, number) must be quoted.
    static bool NeedsQuotes(string s) =>
        s.Length == 0 || s is "null" or "~" or "true" or "false"
        || double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
}
