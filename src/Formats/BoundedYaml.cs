using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Formats;

/// <summary>
/// Parses YAML text (a training config, one <c>key=value</c> override, an evaluation task file) into a
/// <see cref="YamlStream"/> with limits
/// checked first, on YamlDotNet's event stream, which is produced iteratively: nesting deeper than
/// <see cref="MaxDepth"/> (the representation model builds nodes recursively and overflows the stack near 40,000
/// levels, killing the process), more than <see cref="MaxAliases"/> aliases (a "billion laughs" graph) or
/// <see cref="MaxEvents"/> nodes. Every failure, including YamlDotNet's own, is one exception of the caller's kind
/// (its error factory: a config error, a task file error) with a line: the <c>where</c> argument turns a 1-based line
/// into the message prefix ("x.yaml:3" or the override).
/// </summary>
public static class BoundedYaml
{
    /// <summary>A config is four levels deep; 64 leaves room for any hand-written structure.</summary>
    public const int MaxDepth = 64;
    public const int MaxAliases = 100;
    public const int MaxEvents = 1_000_000;

    public static YamlStream Load(string text, Func<long, string> where, Func<string, Exception> error)
    {
        Scan(text, where, error);
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw error($"{where(e.Start.Line)}: malformed YAML: {Reason(e)}");
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            // The representation model's refusal of an event sequence the scan let through: no position to give.
            throw error($"{where(1)}: malformed YAML: {SafeText.Clip(e.Message, 160)}");
        }
        return stream;
    }

    /// <summary>Walks the events once, tracking depth and each mapping's entries; the unclosed flow collection, if any,
    /// is where errors point. YamlDotNet's parser can end a mapping after a key with no value (<c>a: {b: c}*d:</c>),
    /// which its representation model then refuses without a position: that is reported here, with its line.</summary>
    static void Scan(string text, Func<long, string> where, Func<string, Exception> error)
    {
        var parser = new Parser(new StringReader(text));
        var open = new Stack<(long Line, bool Flow, char Bracket, int Nodes)>();
        int aliases = 0, events = 0;
        long lastLine = 1;
        try
        {
            while (parser.MoveNext())
            {
                var ev = parser.Current!;
                lastLine = ev.Start.Line;
                if (++events > MaxEvents)
                    throw error($"{where(lastLine)}: more than {MaxEvents} YAML nodes; a config or task file holds a few dozen");
                switch (ev)
                {
                    case SequenceStart s:
                        open.Push((s.Start.Line, s.Style == SequenceStyle.Flow, '[', 0));
                        break;
                    case MappingStart m:
                        open.Push((m.Start.Line, m.Style == MappingStyle.Flow, '{', 0));
                        break;
                    case SequenceEnd or MappingEnd:
                        if (open.Count > 0 && open.Pop() is { Bracket: '{', Nodes: var n } && n % 2 == 1)
                            throw error($"{where(lastLine)}: malformed YAML: a mapping key without a value");
                        Counted(open);
                        break;
                    case AnchorAlias:
                        if (++aliases > MaxAliases)
                            throw error($"{where(lastLine)}: more than {MaxAliases} YAML aliases (*name); write the values out");
                        Counted(open);
                        break;
                    case Scalar:
                        Counted(open);
                        break;
                }
                if (open.Count > MaxDepth)
                    throw error($"{where(lastLine)}: YAML nested more than {MaxDepth} levels deep; a config or task file needs a handful");
            }
        }
        catch (YamlException e)
        {
            throw error($"{where(e.Start.Line)}: malformed YAML: {Reason(e)}");
        }
        catch (InvalidOperationException)
        {
            // YamlDotNet 18's scanner throws this, with no position, on some unclosed flow collections ("[8").
            var flow = open.FirstOrDefault(o => o.Flow);
            long line = flow.Line > 0 ? flow.Line : lastLine;
            char close = flow.Bracket == '{' ? '}' : ']';
            throw error($"{where(line)}: malformed YAML: unclosed '{(flow.Line > 0 ? flow.Bracket : '[')}' (no matching '{close}')");
        }
    }

    /// <summary>One more complete node (a scalar, an alias or a closed collection) inside the innermost open collection.</summary>
    static void Counted(Stack<(long Line, bool Flow, char Bracket, int Nodes)> open)
    {
        if (open.TryPop(out var top)) open.Push(top with { Nodes = top.Nodes + 1 });
    }

    /// <summary>YamlDotNet's message repeats the position as "(Line: 3, Col: 5, Idx: ...) - (...)": keep only the reason.</summary>
    static string Reason(YamlException e)
    {
        string reason = e.InnerException?.Message ?? e.Message;
        int dash = reason.LastIndexOf("): ", StringComparison.Ordinal);
        if (dash >= 0) reason = reason[(dash + 3)..];
        return SafeText.Clip(reason, 160);
    }
}
