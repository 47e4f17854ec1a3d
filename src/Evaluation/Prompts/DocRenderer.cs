using QLoraNet.Evaluation.Config;

namespace QLoraNet.Evaluation.Prompts;

/// <summary>
/// A task's <c>doc_to_text</c> / <c>doc_to_target</c> / <c>doc_to_choice</c> applied to a row with the harness's rules
/// (lm_eval/api/task.py ConfigurableTask): a template that is exactly a field name gives that field's value as it is;
/// otherwise the rendered text, which becomes an integer when it is all digits and the task has choices (so
/// <c>"{{label}}"</c> is an index); <c>doc_to_choice</c> must give a list. Text is an int for tasks with one context
/// per choice (Winogrande: the gold index).
/// </summary>
public sealed class DocRenderer(TaskConfig task)
{
    public TaskConfig Task => task;

    /// <summary>The question text, or (multiple-input tasks) the gold choice's index.</summary>
    public object Text(Doc doc)
    {
        var value = Apply(task.DocToText, doc, "doc_to_text");
        return value switch
        {
            string or long => value,
            _ => throw Error(doc, "doc_to_text", $"gives a {PythonValues.TypeName(value)} ({Short(value)}); it must give text (or, for one context per choice, the gold index)"),
        };
    }

    /// <summary>The target: an index into the choices, or text.</summary>
    public object Target(Doc doc)
    {
        var value = Apply(task.DocToTarget, doc, "doc_to_target");
        return value switch
        {
            string or long => value,
            bool b => b ? 1L : 0L,
            IReadOnlyList<object?> => throw Error(doc, "doc_to_target", "gives a list (several targets), which is not implemented; give one target"),
            _ => throw Error(doc, "doc_to_target", $"gives a {PythonValues.TypeName(value)} ({Short(value)}); it must give an index or text"),
        };
    }

    /// <summary>The answer choices as text; at least two, or the row is an error (there is nothing to choose).</summary>
    public IReadOnlyList<string> Choices(Doc doc)
    {
        var value = Apply(task.DocToChoice, doc, "doc_to_choice");
        if (value is not IReadOnlyList<object?> list)
            throw Error(doc, "doc_to_choice", $"gives a {PythonValues.TypeName(value)} ({Short(value)}); it must give a list of choices");
        if (list.Count < 2)
            throw Error(doc, "doc_to_choice", $"gives {list.Count} choice(s); a multiple-choice row needs at least 2");
        return list.Select(PythonValues.Str).ToList();
    }

    /// <summary>The task description for this row (MMLU's "The following are multiple choice questions ..."), or "".</summary>
    public string Description(Doc doc) => task.Description is { } d
        ? (doc.Fields.TryGetValue(d.Source, out var v) ? PythonValues.Str(v) : d.Render(doc)) : "";

    object? Apply(DocSpec spec, Doc doc, string key)
    {
        if (spec.Integer is { } i) return i;
        if (spec.List is { } l) return l.Cast<object?>().ToList();
        var template = spec.Template ?? throw new TaskException($"{task.SourceFile}: task '{task.Name}' has no {key}");
        if (doc.Fields.TryGetValue(template.Source, out var field)) return field;
        var value = template.Evaluate(doc);
        if (key == "doc_to_choice" || value is not string text) return value;
        return text.Length > 0 && text.All(char.IsAsciiDigit) && task.DocToChoice.IsSet ? long.Parse(text) : text;
    }

    TaskException Error(Doc doc, string key, string problem) =>
        new($"{task.SourceFile}: task '{task.Name}' {key} {problem} (row {doc.Origin})");

    static string Short(object? v)
    {
        string s = PythonValues.Repr(v);
        return s.Length <= 60 ? s : s[..57] + "...";
    }
}
