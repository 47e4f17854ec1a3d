using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace QLoraNet.Evaluation;

/// <summary>
/// The value model of rows and templates, and how Python prints it. The harness renders its Jinja templates in
/// Python, so a number or a list inside a prompt reads as Python's <c>str()</c> of it (<c>1</c>, <c>0.5</c>,
/// <c>True</c>, <c>['a', 'b']</c>); <see cref="Str"/> reproduces that so prompts are byte-identical.
/// </summary>
public static class PythonValues
{
    /// <summary>Any value a reader produced (JSON elements, Parquet's memory slices and maps, boxed integers) as one of
    /// string, long, double, bool, null, List&lt;object?&gt;, Dictionary&lt;string, object?&gt;.</summary>
    public static object? Normalize(object? value) => value switch
    {
        null => null,
        string s => s,
        ReadOnlyMemory<char> m => m.ToString(),
        bool b => b,
        sbyte or byte or short or ushort or int or uint or long => Convert.ToInt64(value, CultureInfo.InvariantCulture),
        ulong u => u <= long.MaxValue ? (long)u : (double)u,
        float f => (double)f,
        double d => d,
        decimal m => (double)m,
        JsonElement e => FromJson(e),
        DateTime t => t.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
        DateTimeOffset t => t.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
        byte[] => throw new TaskException("a binary column; task data must be text, numbers, booleans, lists or structs"),
        IDictionary d => LastWins(d.Keys.Cast<object>().Select(k => (k.ToString() ?? "", Normalize(d[k])))),
        IEnumerable list => list.Cast<object?>().Select(Normalize).ToList(),
        _ => value.ToString(),
    };

    static object? FromJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
        _ => LastWins(e.EnumerateObject().Select(p => (p.Name, FromJson(p.Value)))),
    };

    /// <summary>A dict from pairs where a repeated key keeps its last value, as Python's json.loads and dict() do.</summary>
    static Dictionary<string, object?> LastWins(IEnumerable<(string Key, object? Value)> pairs)
    {
        var d = new Dictionary<string, object?>();
        foreach (var (k, v) in pairs) d[k] = v;
        return d;
    }

    /// <summary>Python's <c>str(value)</c>.</summary>
    public static string Str(object? value) => value is string s ? s : Repr(value);

    /// <summary>Python's <c>repr(value)</c>: strings quoted as Python quotes them, lists and dicts with repr items.</summary>
    public static string Repr(object? value) => value switch
    {
        null => "None",
        string s => QuoteString(s),
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FormatFloat(d),
        IReadOnlyDictionary<string, object?> m => "{" + string.Join(", ", m.Select(kv => QuoteString(kv.Key) + ": " + Repr(kv.Value))) + "}",
        IReadOnlyList<object?> list => "[" + string.Join(", ", list.Select(Repr)) + "]",
        _ => value.ToString() ?? "",
    };

    /// <summary>Equality as Python's <c>==</c> between the values rows hold (1 == 1.0, lists element-wise).</summary>
    public static bool PyEquals(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (long x, double y) => x == y,
        (double x, long y) => x == y,
        (bool x, long y) => (x ? 1 : 0) == y,
        (long x, bool y) => x == (y ? 1 : 0),
        (IReadOnlyList<object?> x, IReadOnlyList<object?> y) => x.Count == y.Count && x.Zip(y).All(p => PyEquals(p.First, p.Second)),
        (IReadOnlyDictionary<string, object?> x, IReadOnlyDictionary<string, object?> y) =>
            x.Count == y.Count && x.All(kv => y.TryGetValue(kv.Key, out var v) && PyEquals(kv.Value, v)),
        _ => Equals(a, b),
    };

    /// <summary>Python's type name, for messages ("'int' object has no attribute 'strip'").</summary>
    public static string TypeName(object? value) => value switch
    {
        null => "None",
        string => "str",
        bool => "bool",
        long => "int",
        double => "float",
        IReadOnlyDictionary<string, object?> => "dict",
        IReadOnlyList<object?> => "list",
        _ => value.GetType().Name,
    };

    static string FormatFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        // Python prints the shortest round-trip form and keeps ".0" on integral values (1.0, not 1).
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        if (r.Contains('E')) r = d.ToString("0.0###############e+00", CultureInfo.InvariantCulture);
        return r.Contains('.') || r.Contains('e') ? r : r + ".0";
    }

    /// <summary>Python's string repr: single quotes unless the text has a single quote and no double quote.</summary>
    static string QuoteString(string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(q);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == q) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append($"\\x{(int)c:x2}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(q).ToString();
    }
}
