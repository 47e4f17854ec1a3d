using System.Globalization;
using System.Text.RegularExpressions;

namespace QLoraNet.Evaluation.Templates;

/// <summary>
/// The Python methods and Jinja filters templates may call. Each behaves as its Python/Jinja namesake on the values
/// rows hold; a name not listed here is refused when the task file is read, naming the ones that exist.
/// </summary>
internal static class TemplateFunctions
{
    public static readonly string[] MethodNames =
        ["strip", "lstrip", "rstrip", "lower", "upper", "capitalize", "split", "replace", "startswith", "endswith", "index"];

    public static readonly string[] FilterNames =
        ["trim", "lower", "upper", "capitalize", "int", "float", "string", "length", "count", "first", "last", "join", "replace", "regex_replace", "list"];

    public static object? Method(TemplateScope scope, object? target, string name, IReadOnlyList<object?> args, string what)
    {
        switch (target, name)
        {
            case (string s, "strip"): return StripArg(args) is { } c1 ? s.Trim(c1) : s.Trim();
            case (string s, "lstrip"): return StripArg(args) is { } c2 ? s.TrimStart(c2) : s.TrimStart();
            case (string s, "rstrip"): return StripArg(args) is { } c3 ? s.TrimEnd(c3) : s.TrimEnd();
            case (string s, "lower"): return s.ToLowerInvariant();
            case (string s, "upper"): return s.ToUpperInvariant();
            case (string s, "capitalize"): return Capitalize(s);
            case (string s, "split"): return Split(s, args);
            case (string s, "replace") when args is [string a, string b]: return s.Replace(a, b, StringComparison.Ordinal);
            case (string s, "startswith") when args is [string p]: return s.StartsWith(p, StringComparison.Ordinal);
            case (string s, "endswith") when args is [string p]: return s.EndsWith(p, StringComparison.Ordinal);
            case (IReadOnlyList<object?> list, "index") when args.Count == 1:
                for (int i = 0; i < list.Count; i++)
                    if (PythonValues.PyEquals(list[i], args[0])) return (long)i;
                throw scope.RowError($"{PythonValues.Repr(args[0])} is not in {what} {PythonValues.Repr(list)}");
            default:
                throw scope.RowError($"{what} is a {PythonValues.TypeName(target)}: .{name}() with {args.Count} argument(s) does not apply to it");
        }
    }

    public static object? Filter(TemplateScope scope, object? value, string name, IReadOnlyList<object?> args)
    {
        switch (name, value)
        {
            case ("trim", _): return PythonValues.Str(value).Trim();
            case ("lower", _): return PythonValues.Str(value).ToLowerInvariant();
            case ("upper", _): return PythonValues.Str(value).ToUpperInvariant();
            case ("capitalize", _): return Capitalize(PythonValues.Str(value));
            case ("string", _): return PythonValues.Str(value);
            // Jinja's int/float filters give 0 when the text is not a number.
            case ("int", long l): return l;
            case ("int", double d): return (long)Math.Truncate(d);
            case ("int", bool b): return b ? 1L : 0L;
            case ("int", _): return long.TryParse(PythonValues.Str(value).Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long p) ? p : 0L;
            case ("float", long l): return (double)l;
            case ("float", double d): return d;
            case ("float", _): return double.TryParse(PythonValues.Str(value).Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double f) ? f : 0.0;
            case ("length" or "count", string s): return (long)s.Length;
            case ("length" or "count", IReadOnlyList<object?> l): return (long)l.Count;
            case ("length" or "count", IReadOnlyDictionary<string, object?> m): return (long)m.Count;
            case ("first", IReadOnlyList<object?> l) when l.Count > 0: return l[0];
            case ("last", IReadOnlyList<object?> l) when l.Count > 0: return l[^1];
            case ("first", string s) when s.Length > 0: return s[..1];
            case ("last", string s) when s.Length > 0: return s[^1..];
            case ("list", IReadOnlyList<object?> l): return l;
            case ("list", string s): return s.Select(c => (object?)c.ToString()).ToList();
            case ("join", IReadOnlyList<object?> l): return string.Join(args is [string sep] ? sep : "", l.Select(PythonValues.Str));
            case ("replace", _) when args is [string a, string b]: return PythonValues.Str(value).Replace(a, b, StringComparison.Ordinal);
            case ("regex_replace", _) when args is [string pattern, string repl]:
                return TaskRegex.Replace(pattern, PythonValues.Str(value), PythonReplacement(repl), "filter 'regex_replace'");
            default:
                throw scope.RowError($"filter '{name}' with {args.Count} argument(s) does not apply to a {PythonValues.TypeName(value)}");
        }
    }

    static char[]? StripArg(IReadOnlyList<object?> args) => args is [string chars] ? chars.ToCharArray() : null;

    /// <summary>Python's str.capitalize: first character upper case, the rest lower case.</summary>
    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Python's str.split: on runs of whitespace without an argument, else on the separator exactly.</summary>
    static List<object?> Split(string s, IReadOnlyList<object?> args) => args switch
    {
        [] or [null] => s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Cast<object?>().ToList(),
        [string sep] when sep.Length > 0 => s.Split(sep).Cast<object?>().ToList(),
        _ => throw new TaskException("split() takes no argument or a non-empty separator string"),
    };

    /// <summary>Python's re.sub replacement (\1, \g&lt;1&gt;) in .NET's syntax ($1).</summary>
    static string PythonReplacement(string repl) =>
        Regex.Replace(repl.Replace("$", "$$"), @"\\g<(\w+)>|\\(\d+)", m => "${" + (m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value) + "}");
}
