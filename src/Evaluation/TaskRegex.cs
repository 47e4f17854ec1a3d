using System.Text.RegularExpressions;
using QLoraNet.Formats;

namespace QLoraNet.Evaluation;

/// <summary>
/// Regular expressions a task file brings (a filter's <c>regex_pattern</c>, a metric's <c>regexes_to_ignore</c>, a
/// template's <c>regex_replace</c>), run by .NET's backtracking engine, which is what gives Python's <c>re</c> its
/// semantics (lookarounds, lazy loops, the leftmost alternative first), under a time limit per match: a pattern with
/// nested quantifiers such as <c>(a+)+$</c> can take exponential time on a long generation, and an evaluation must
/// stop with an error naming the pattern rather than hang. A bad pattern is a <see cref="TaskException"/> too.
/// </summary>
public static class TaskRegex
{
    /// <summary>Far beyond what any sane pattern needs on a model's answer (microseconds), short enough to notice.</summary>
    public static readonly TimeSpan MatchTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Why <paramref name="pattern"/> is not a valid regular expression, or null when it is.</summary>
    public static string? Invalid(string pattern)
    {
        try
        {
            _ = new Regex(pattern, RegexOptions.None, MatchTimeout);
            return null;
        }
        catch (ArgumentException e) { return Describe(pattern, e); }
    }

    /// <summary>The pattern parsed, or a TaskException naming it (<paramref name="where"/>: the key it came from).</summary>
    public static Regex Parse(string pattern, string where)
    {
        try { return new Regex(pattern, RegexOptions.None, MatchTimeout); }
        catch (ArgumentException e) { throw new TaskException($"{where}: {Describe(pattern, e)}"); }
    }

    /// <summary>Every match of <paramref name="regex"/> in <paramref name="text"/>, as Python's finditer.</summary>
    public static IReadOnlyList<Match> Matches(Regex regex, string text) =>
        Timed(regex.ToString(), () => regex.Matches(text).ToList());

    /// <summary>Python's re.sub(pattern, replacement, text) with a .NET replacement string (the pattern parsed once,
    /// in Regex's own cache).</summary>
    public static string Replace(string pattern, string text, string replacement, string where) => Timed(pattern, () =>
    {
        try { return Regex.Replace(text, pattern, replacement, RegexOptions.None, MatchTimeout); }
        catch (ArgumentException e) { throw new TaskException($"{where}: {Describe(pattern, e)}"); }
    });

    static T Timed<T>(string pattern, Func<T> run)
    {
        try { return run(); }
        catch (RegexMatchTimeoutException)
        {
            throw new TaskException($"regular expression {SafeText.Quote(pattern, 120)} ran longer than {MatchTimeout.TotalSeconds:0} s on one "
                + "text (nested quantifiers backtrack exponentially); simplify it");
        }
    }

    /// <summary>"'(a' is not a valid regular expression (InsufficientClosingParentheses at offset 2)": the reason without
    /// the pattern .NET's message repeats, escaped and clipped like every value a message quotes.</summary>
    static string Describe(string pattern, ArgumentException e) =>
        $"{SafeText.Quote(pattern, 120)} is not a valid regular expression ({SafeText.Clip(e is RegexParseException p ? $"{p.Error} at offset {p.Offset}" : e.Message, 160)})";
}
