namespace QLoraNet.Evaluation.Templates;

/// <summary>A parsed template expression (see <see cref="TemplateParser"/> for the grammar). Evaluation is pure: it
/// reads the row through the scope and returns a value of the <see cref="PythonValues"/> model.</summary>
internal abstract record TemplateExpr
{
    public abstract object? Evaluate(TemplateScope scope);
}

internal sealed record LiteralExpr(object? Value) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope) => Value;
}

internal sealed record NameExpr(string Name) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope) => scope.Lookup(Name);
}

internal sealed record ListExpr(IReadOnlyList<TemplateExpr> Items) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope) => Items.Select(i => i.Evaluate(scope)).ToList();
}

/// <summary><c>x.name</c>: a mapping's key (Jinja falls back from attribute to item, so <c>choices.text</c> reads
/// ARC's <c>choices["text"]</c>).</summary>
internal sealed record AttributeExpr(TemplateExpr Target, string Name) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope) => Target.Evaluate(scope) switch
    {
        IReadOnlyDictionary<string, object?> m when m.TryGetValue(Name, out var v) => v,
        IReadOnlyDictionary<string, object?> m => throw scope.RowError($"'{Name}' is not a key of {Describe(Target)}; its keys are {string.Join(", ", m.Keys)}"),
        var v => throw scope.RowError($"{Describe(Target)} is a {PythonValues.TypeName(v)}, which has no attribute '{Name}'"),
    };

    internal static string Describe(TemplateExpr e) => e switch
    {
        NameExpr n => $"'{n.Name}'",
        AttributeExpr a => $"'{Path(a)}'",
        _ => "the value",
    };

    static string Path(TemplateExpr e) => e switch
    {
        NameExpr n => n.Name,
        AttributeExpr a => Path(a.Target) + "." + a.Name,
        _ => "(...)",
    };
}

/// <summary><c>x[i]</c> (negative i counts from the end, as in Python) and <c>x["key"]</c>.</summary>
internal sealed record IndexExpr(TemplateExpr Target, TemplateExpr Index) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope)
    {
        var target = Target.Evaluate(scope);
        var index = Index.Evaluate(scope);
        switch (target, index)
        {
            case (IReadOnlyDictionary<string, object?> m, string key):
                return m.TryGetValue(key, out var v) ? v
                    : throw scope.RowError($"'{key}' is not a key of {AttributeExpr.Describe(Target)}; its keys are {string.Join(", ", m.Keys)}");
            case (IReadOnlyList<object?> list, long i):
                return list[Position(scope, i, list.Count)];
            case (string s, long i):
                return s[Position(scope, i, s.Length)].ToString();
            default:
                throw scope.RowError($"cannot index {AttributeExpr.Describe(Target)} (a {PythonValues.TypeName(target)}) with {PythonValues.Repr(index)}");
        }

        int Position(TemplateScope sc, long i, int count)
        {
            long p = i < 0 ? count + i : i;
            if (p < 0 || p >= count) throw sc.RowError($"index {i} is out of range for {AttributeExpr.Describe(Target)} of length {count}");
            return (int)p;
        }
    }
}

/// <summary><c>x[a:b]</c> on lists and strings, with Python's clamping and negative bounds.</summary>
internal sealed record SliceExpr(TemplateExpr Target, TemplateExpr? Start, TemplateExpr? Stop) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope)
    {
        var target = Target.Evaluate(scope);
        int count = target switch
        {
            string s => s.Length,
            IReadOnlyList<object?> l => l.Count,
            _ => throw scope.RowError($"cannot slice {AttributeExpr.Describe(Target)} (a {PythonValues.TypeName(target)})"),
        };
        int start = Bound(Start, 0), stop = Math.Max(start, Bound(Stop, count));
        return target is string str ? str[start..stop] : ((IReadOnlyList<object?>)target).Skip(start).Take(stop - start).ToList();

        int Bound(TemplateExpr? e, int fallback)
        {
            if (e is null) return fallback;
            if (e.Evaluate(scope) is not long b) throw scope.RowError("slice bounds must be integers");
            long p = b < 0 ? count + b : b;
            return (int)Math.Clamp(p, 0, count);
        }
    }
}

/// <summary><c>a + b</c> (numbers add, strings and lists concatenate) and Jinja's <c>a ~ b</c> (text join).</summary>
internal sealed record BinaryExpr(char Op, TemplateExpr Left, TemplateExpr Right) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope)
    {
        var a = Left.Evaluate(scope);
        var b = Right.Evaluate(scope);
        if (Op == '~') return PythonValues.Str(a) + PythonValues.Str(b);
        return (a, b) switch
        {
            (string x, string y) => x + y,
            (long x, long y) => x + y,
            (long x, double y) => x + y,
            (double x, long y) => x + y,
            (double x, double y) => x + y,
            (IReadOnlyList<object?> x, IReadOnlyList<object?> y) => x.Concat(y).ToList(),
            _ => throw scope.RowError($"cannot add a {PythonValues.TypeName(a)} and a {PythonValues.TypeName(b)} (use ~ to join as text)"),
        };
    }
}

/// <summary><c>x.method(args)</c>: the Python methods templates call (<see cref="TemplateFunctions.Method"/>).</summary>
internal sealed record MethodExpr(TemplateExpr Target, string Name, IReadOnlyList<TemplateExpr> Args) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope) =>
        TemplateFunctions.Method(scope, Target.Evaluate(scope), Name, Args.Select(a => a.Evaluate(scope)).ToList(), AttributeExpr.Describe(Target));
}

/// <summary><c>x | filter(args)</c>: the Jinja filters (<see cref="TemplateFunctions.Filter"/>).</summary>
internal sealed record FilterExpr(TemplateExpr Target, string Name, IReadOnlyList<TemplateExpr> Args) : TemplateExpr
{
    public override object? Evaluate(TemplateScope scope) =>
        TemplateFunctions.Filter(scope, Target.Evaluate(scope), Name, Args.Select(a => a.Evaluate(scope)).ToList());
}
