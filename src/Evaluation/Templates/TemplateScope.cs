namespace QLoraNet.Evaluation.Templates;

/// <summary>The names a template sees while rendering one row: the row's fields, then its own <c>set</c> variables
/// (which shadow fields, as in Jinja).</summary>
internal sealed class TemplateScope(Doc doc, string where)
{
    readonly Dictionary<string, object?> locals = new();

    public Doc Doc => doc;

    public void Set(string name, object? value) => locals[name] = value;

    public object? Lookup(string name)
    {
        if (locals.TryGetValue(name, out var v)) return v;
        if (doc.Fields.TryGetValue(name, out v)) return v;
        throw Error($"field '{name}' is not in row {doc.Origin}; its fields are {string.Join(", ", doc.Fields.Keys)}");
    }

    /// <summary>"tasks/x.yaml:9 doc_to_text: problem" (the problem names the row where it matters).</summary>
    public TaskException Error(string problem) => new($"{where}: {problem}");

    /// <summary>Like <see cref="Error"/>, naming the row.</summary>
    public TaskException RowError(string problem) => new($"{where}: {problem} (row {doc.Origin})");
}
