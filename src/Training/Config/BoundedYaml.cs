using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// Parses YAML text (a config file or one <c>key=value</c> override) into a <see cref="YamlStream"/> with limits
/// checked first, on YamlDotNet's event stream, which is produced iteratively: nesting deeper than
/// <see cref="MaxDepth"/> (the representation model builds nodes recursively and overflows the stack near 40,000
/// levels, killing the process), more than <see cref="MaxAliases"/> aliases (a "billion laughs" graph) or
/// <see cref="MaxEvents"/> nodes. Every failure, including YamlDotNet's own, is one <see cref="ConfigException"/>
/// with a line: <paramref name="where"/> turns a 1-based line into the message prefix ("x.yaml:3" or the override).
/// </summary>
internal static class BoundedYaml
{
    /// <summary>A config is four levels deep; 64 leaves room for any hand-written structure.</summary>
    public const int MaxDepth = 64;
    public const int MaxAliases = 100;
    public const int MaxEvents = 1_000_000;

    public static YamlStream Load(string text, Func<long, string> where)
    {
        Scan(text, where);
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new ConfigException($"{where(e.Start.Line)}: malformed YAML: {Reason(e)}");
        }
        return stream;
    }

    /// <summary>Walks the events once, tracking depth; the unclosed flow collection, if any, is where errors point.</summary>
    static void Scan(string text, Func<long, string> where)
    {
        var parser = new Parser(new StringReader(text));
        var open = new Stack<(long Line, bool Flow, char Bracket)>();
        int aliases = 0, events = 0;
        long lastLine = 1;
        try
        {
            while (parser.MoveNext())
            {
                var ev = parser.Current!;
                lastLine = ev.Start.Line;
                if (++events > MaxEvents)
                    throw new ConfigException($"{where(lastLine)}: more than {MaxEvents} YAML nodes; a config is a few dozen");
                switch (ev)
                {
                    case SequenceStart s:
                        open.Push((s.Start.Line, s.Style == SequenceStyle.Flow, '['));
                        break;
                    case MappingStart m:
                        open.Push((m.Start.Line, m.Style == MappingStyle.Flow, '{'));
                        break;
                    case SequenceEnd or MappingEnd:
                        if (open.Count > 0) open.Pop();
                        break;
                    case AnchorAlias:
                        if (++aliases > MaxAliases)
                            throw new ConfigException($"{where(lastLine)}: more than {MaxAliases} YAML aliases (*name); write the values out");
                        break;
                }
                if (open.Count > MaxDepth)
                    throw new ConfigException($"{where(lastLine)}: YAML nested more than {MaxDepth} levels deep; a config needs a handful");
            }
        }
        catch (YamlException e)
        {
            throw new ConfigException($"{where(e.Start.Line)}: malformed YAML: {Reason(e)}");
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet 18's scanner throws this, with no position, on some unclosed flow collections ("[8").
            var flow = open.FirstOrDefault(o => o.Flow);
            long line = flow.Line > 0 ? flow.Line : lastLine;
            char close = flow.Bracket == '{' ? '}' : ']';
            throw new ConfigException($"{where(line)}: malformed YAML: unclosed '{(flow.Line > 0 ? flow.Bracket : '[')}' (no matching '{close}')");
        }
    }

    /// <summary>YamlDotNet's message repeats the position as "(Line: 3, Col: 5, Idx: ...) - (...)": keep only the reason.</summary>
    static string Reason(YamlException e)
    {
        string reason = e.InnerException?.Message ?? e.Message;
        int dash = reason.LastIndexOf("): ", StringComparison.Ordinal);
        if (dash >= 0) reason = reason[(dash + 3)..];
        return QLoraNet.Formats.SafeText.Clip(reason, 160);
    }
}
