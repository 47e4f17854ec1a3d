using System.Globalization;
using System.Text;

namespace QLoraNet.Evaluation.Templates;

/// <summary>
/// Parses the expression inside <c>{{ }}</c> or after <c>set name =</c>. Grammar (Jinja's precedence: filters bind
/// to the operand they follow, so <c>a + b | trim</c> trims only b):
/// <code>
/// expr     := filtered (('+' | '~') filtered)*
/// filtered := postfix ('|' NAME ['(' args ')'])*
/// postfix  := primary ('.' NAME ['(' args ')'] | '[' expr ']' | '[' [expr] ':' [expr] ']')*
/// primary  := STRING | ['-'] NUMBER | true | false | none | NAME | '[' [expr (',' expr)*] ']' | '(' expr ')'
/// </code>
/// Strings take Python's escapes (\n, \t, \\, \', \"). Method and filter names are checked here, so a task file
/// using one we do not implement fails when it is read, not halfway through a run.
/// </summary>
internal sealed class TemplateParser
{
    /// <summary>Bounds that keep parsing and evaluation (both recursive) far from the stack's end whatever the input:
    /// lm-evaluation-harness's templates have a few dozen tokens and nest a few levels.</summary>
    public const int MaxTokens = 2000, MaxDepth = 64;

    readonly List<string> tokens;
    readonly string source, where;
    int pos, depth;

    TemplateParser(string source, string where)
    {
        this.source = source;
        this.where = where;
        tokens = Tokenize(source);
    }

    public static TemplateExpr Parse(string source, string where)
    {
        var p = new TemplateParser(source, where);
        if (p.tokens.Count == 0) throw p.Error("empty expression");
        if (p.tokens.Count > MaxTokens) throw p.Error($"{p.tokens.Count} tokens; an expression may have {MaxTokens}");
        var expr = p.Expression();
        if (p.pos < p.tokens.Count) throw p.Error($"unexpected '{p.tokens[p.pos]}'");
        return expr;
    }

    TemplateExpr Expression()
    {
        if (++depth > MaxDepth) throw Error($"nested more than {MaxDepth} levels deep");
        var left = Filtered();
        while (Peek() is "+" or "~")
        {
            char op = Next()[0];
            left = new BinaryExpr(op, left, Filtered());
        }
        depth--;
        return left;
    }

    TemplateExpr Filtered()
    {
        var e = Postfix();
        while (Peek() == "|")
        {
            Next();
            string name = Name("a filter name");
            if (!TemplateFunctions.FilterNames.Contains(name))
                throw Error($"filter '{name}' is not implemented; filters: {string.Join(", ", TemplateFunctions.FilterNames)}");
            e = new FilterExpr(e, name, Peek() == "(" ? Arguments() : []);
        }
        return e;
    }

    TemplateExpr Postfix()
    {
        var e = Primary();
        while (true)
        {
            if (Peek() == ".")
            {
                Next();
                string name = Name("an attribute or method name");
                if (Peek() == "(")
                {
                    if (!TemplateFunctions.MethodNames.Contains(name))
                        throw Error($"method '.{name}()' is not implemented; methods: {string.Join(", ", TemplateFunctions.MethodNames.Select(m => "." + m + "()"))}");
                    e = new MethodExpr(e, name, Arguments());
                }
                else e = new AttributeExpr(e, name);
            }
            else if (Peek() == "[")
            {
                Next();
                TemplateExpr? start = Peek() == ":" ? null : Expression();
                if (Peek() == ":")
                {
                    Next();
                    TemplateExpr? stop = Peek() == "]" ? null : Expression();
                    Expect("]");
                    e = new SliceExpr(e, start, stop);
                }
                else
                {
                    Expect("]");
                    e = new IndexExpr(e, start!);
                }
            }
            else return e;
        }
    }

    TemplateExpr Primary()
    {
        string t = Peek() ?? throw Error("the expression ends too early");
        if (t[0] is '\'' or '"') { Next(); return new LiteralExpr(t[1..]); }
        if (t == "-" && pos + 1 < tokens.Count && char.IsDigit(tokens[pos + 1][0])) { Next(); return Number("-" + Next()); }
        if (char.IsDigit(t[0])) return Number(Next());
        if (t == "[")
        {
            Next();
            var items = new List<TemplateExpr>();
            while (Peek() != "]")
            {
                items.Add(Expression());
                if (Peek() == ",") Next();
                else if (Peek() != "]") throw Error($"expected ',' or ']' in a list, got '{Peek() ?? "the end"}'");
            }
            Next();
            return new ListExpr(items);
        }
        if (t == "(")
        {
            Next();
            var inner = Expression();
            Expect(")");
            return inner;
        }
        string name = Name("a field name, a string, a number or a list");
        return name switch
        {
            "true" or "True" => new LiteralExpr(true),
            "false" or "False" => new LiteralExpr(false),
            "none" or "None" => new LiteralExpr(null),
            _ => new NameExpr(name),
        };
    }

    List<TemplateExpr> Arguments()
    {
        Expect("(");
        var args = new List<TemplateExpr>();
        while (Peek() != ")")
        {
            args.Add(Expression());
            if (Peek() == ",") Next();
            else if (Peek() != ")") throw Error($"expected ',' or ')' in arguments, got '{Peek() ?? "the end"}'");
        }
        Next();
        return args;
    }

    TemplateExpr Number(string text) =>
        long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l) ? new LiteralExpr(l)
        : double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? new LiteralExpr(d)
        : throw Error($"'{text}' is not a number");

    string Name(string what)
    {
        string? t = Peek();
        if (t is null || !(char.IsLetter(t[0]) || t[0] == '_')) throw Error($"expected {what}, got '{t ?? "the end"}'");
        return Next();
    }

    void Expect(string token)
    {
        if (Peek() != token) throw Error($"expected '{token}', got '{Peek() ?? "the end"}'");
        Next();
    }

    string? Peek() => pos < tokens.Count ? tokens[pos] : null;
    string Next() => tokens[pos++];

    TaskException Error(string problem) =>
        new($"{where}: in template expression {QLoraNet.Formats.SafeText.Quote(source.Trim(), 120)}: {QLoraNet.Formats.SafeText.Line(problem, 300)}");

    /// <summary>Tokens; a string literal is kept as its quote character followed by its unescaped text.</summary>
    List<string> Tokenize(string s)
    {
        var list = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            if (char.IsWhiteSpace(c)) { i++; continue; }
            if (c is '\'' or '"')
            {
                var sb = new StringBuilder().Append(c);
                int j = i + 1;
                for (; j < s.Length && s[j] != c; j++)
                {
                    if (s[j] != '\\' || j + 1 >= s.Length) { sb.Append(s[j]); continue; }
                    char e = s[++j];
                    sb.Append(e switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '0' => '\0', _ => e });
                }
                if (j >= s.Length) throw Error($"string starting at character {i} is not closed");
                list.Add(sb.ToString());
                i = j + 1;
                continue;
            }
            if (char.IsLetterOrDigit(c) || c == '_')
            {
                int j = i;
                bool number = char.IsDigit(c);
                while (j < s.Length && (char.IsLetterOrDigit(s[j]) || s[j] == '_' || (number && s[j] == '.' && j + 1 < s.Length && char.IsDigit(s[j + 1])))) j++;
                list.Add(s[i..j]);
                i = j;
                continue;
            }
            if ("[](),.:|+~-".Contains(c)) { list.Add(c.ToString()); i++; continue; }
            throw Error($"unsupported character '{c}' (operators: + ~ | . [ ] [a:b] ( ) ,)");
        }
        return list;
    }
}
