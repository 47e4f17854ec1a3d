using System.Text;

namespace QLoraNet.Evaluation.Templates;

/// <summary>
/// The Jinja subset lm-evaluation-harness task files use for <c>doc_to_text</c>, <c>doc_to_target</c> and
/// <c>doc_to_choice</c>: text with <c>{{ expression }}</c> outputs, <c>{% set name = expression %}</c>,
/// <c>{# comments #}</c> and the whitespace-trimming dashes (<c>{{-</c>, <c>-%}</c>). Expressions are described in
/// <see cref="TemplateParser"/>. Like the harness's environment (StrictUndefined, keep_trailing_newline) a name that
/// is not a field of the row is an error and text is kept byte for byte. Any other tag (<c>if</c>, <c>for</c>,
/// macros) is refused by name. Parsed once per task file; rendering is pure.
/// </summary>
public sealed class Template
{
    abstract record Node;
    sealed record TextNode(string Text) : Node;
    sealed record OutputNode(TemplateExpr Expr) : Node;
    sealed record SetNode(string Name, TemplateExpr Expr) : Node;

    readonly IReadOnlyList<Node> nodes;

    Template(string source, string where, IReadOnlyList<Node> nodes)
    {
        Source = source;
        Where = where;
        this.nodes = nodes;
    }

    /// <summary>The template text as written.</summary>
    public string Source { get; }

    /// <summary>Where it was written, for errors: "tasks/arc.yaml:9 doc_to_text".</summary>
    public string Where { get; }

    /// <summary>True when the template is one <c>{{ expression }}</c> and nothing else: its value can be a list or a
    /// number rather than text (the harness's <c>doc_to_choice: "{{choices.text}}"</c>).</summary>
    public bool IsSingleExpression => nodes is [OutputNode];

    /// <summary>True when the template has no tags at all (plain text).</summary>
    public bool IsPlainText => nodes.All(n => n is TextNode);

    public static Template Parse(string source, string where)
    {
        var nodes = new List<Node>();
        var text = new StringBuilder();
        bool trimNextText = false;
        int i = 0;
        while (i < source.Length)
        {
            int open = IndexOfTag(source, i);
            if (open < 0)
            {
                text.Append(source, i, source.Length - i);
                break;
            }
            text.Append(source, i, open - i);
            char kind = source[open + 1];
            string close = kind switch { '{' => "}}", '%' => "%}", _ => "#}" };
            int end = source.IndexOf(close, open + 2, StringComparison.Ordinal);
            if (end < 0) throw new TaskException($"{where}: '{{{kind}' at character {open} is never closed with '{close}'");
            string inner = source[(open + 2)..end];
            bool trimBefore = inner.StartsWith('-'), trimAfter = inner.EndsWith('-') && kind != '#';
            if (trimBefore) inner = inner[1..];
            if (trimAfter) inner = inner[..^1];

            FlushText(nodes, text, trimNextText, trimBefore);
            trimNextText = trimAfter;
            if (kind == '{') nodes.Add(new OutputNode(TemplateParser.Parse(inner, where)));
            else if (kind == '%') nodes.Add(ParseStatement(inner.Trim(), where));
            i = end + 2;
        }
        FlushText(nodes, text, trimNextText, false);
        return new Template(source, where, nodes);
    }

    /// <summary>The template's text for one row.</summary>
    public string Render(Doc doc)
    {
        var scope = new TemplateScope(doc, Where);
        var sb = new StringBuilder();
        foreach (var node in nodes)
        {
            switch (node)
            {
                case TextNode t: sb.Append(t.Text); break;
                case OutputNode o: sb.Append(PythonValues.Str(o.Expr.Evaluate(scope))); break;
                case SetNode s: scope.Set(s.Name, s.Expr.Evaluate(scope)); break;
            }
        }
        return sb.ToString();
    }

    /// <summary>The value of a single-expression template (a list, a number, ...); else the rendered text.</summary>
    public object? Evaluate(Doc doc) =>
        nodes is [OutputNode only] ? only.Expr.Evaluate(new TemplateScope(doc, Where)) : Render(doc);

    static int IndexOfTag(string s, int from)
    {
        for (int i = from; i < s.Length - 1; i++)
            if (s[i] == '{' && s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    static void FlushText(List<Node> nodes, StringBuilder text, bool trimStart, bool trimEnd)
    {
        string t = text.ToString();
        text.Clear();
        if (trimStart) t = t.TrimStart();
        if (trimEnd) t = t.TrimEnd();
        if (t.Length > 0) nodes.Add(new TextNode(t));
    }

    static Node ParseStatement(string inner, string where)
    {
        string tag = new(inner.TakeWhile(c => char.IsLetterOrDigit(c) || c == '_').ToArray());
        if (tag != "set")
            throw new TaskException($"{where}: template tag '{{% {(tag.Length > 0 ? tag : inner)} %}}' is not supported; this engine implements {{{{ expression }}}}, {{% set name = expression %}} and {{# comments #}}");
        string rest = inner[3..];
        int eq = rest.IndexOf('=');
        string name = eq < 0 ? "" : rest[..eq].Trim();
        if (eq < 0 || name.Length == 0 || !name.All(c => char.IsLetterOrDigit(c) || c == '_'))
            throw new TaskException($"{where}: '{{% {inner} %}}' must read '{{% set name = expression %}}'");
        return new SetNode(name, TemplateParser.Parse(rest[(eq + 1)..], where));
    }
}
