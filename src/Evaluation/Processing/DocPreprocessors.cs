using System.Text.RegularExpressions;

namespace QLoraNet.Evaluation.Processing;

/// <summary>
/// Named stand-ins for the harness's <c>process_docs: !function ...</c> Python hooks, for the built-in tasks that need
/// one. Each maps a row to the row plus the fields its task's templates read, exactly as the harness's function does:
/// <list type="bullet">
/// <item><c>hellaswag</c> (lm_eval/tasks/hellaswag/utils.py): <c>query</c> = preprocess(activity_label + ": " + ctx_a +
/// " " + ctx_b.capitalize()), <c>choices</c> = preprocess(each ending), <c>gold</c> = int(label), where preprocess strips,
/// turns " [title]" into ". ", deletes "[...]" and collapses double spaces (WikiHow artifacts).</item>
/// <item><c>winogrande</c> (lm_eval/tasks/winogrande/preprocess_winogrande.py, which the harness wires through
/// doc_to_text/doc_to_target/doc_to_choice): <c>gold</c> = {"1": 0, "2": 1}[answer], <c>contexts</c> = the sentence up
/// to the blank with option1 / option2 filled in, <c>continuation</c> = the rest after the blank, stripped. Partial
/// scoring: the context varies per choice and the same continuation is scored.</item>
/// </list>
/// </summary>
public static class DocPreprocessors
{
    public static readonly string[] Names = ["hellaswag", "winogrande"];

    public static Doc Apply(string name, Doc doc) => name switch
    {
        "hellaswag" => HellaSwag(doc),
        "winogrande" => Winogrande(doc),
        _ => throw new ArgumentException($"unknown preprocessor '{name}'"),
    };

    static Doc HellaSwag(Doc doc)
    {
        string ctx = Text(doc, "ctx_a") + " " + Capitalize(Text(doc, "ctx_b"));
        var endings = doc.Fields.GetValueOrDefault("endings") as IReadOnlyList<object?>
            ?? throw Bad(doc, "hellaswag", "field 'endings' (a list of 4 strings) is missing");
        return doc.With([
            new("query", Preprocess(Text(doc, "activity_label") + ": " + ctx)),
            new("choices", endings.Select(e => (object?)Preprocess(PythonValues.Str(e))).ToList()),
            new("gold", Int(doc, "label", "hellaswag")),
        ]);
    }

    static string Preprocess(string text)
    {
        text = text.Trim();
        text = text.Replace(" [title]", ". ", StringComparison.Ordinal);
        text = Regex.Replace(text, @"\[.*?\]", "");
        return text.Replace("  ", " ", StringComparison.Ordinal);
    }

    static Doc Winogrande(Doc doc)
    {
        string sentence = Text(doc, "sentence");
        int blank = sentence.IndexOf('_');
        if (blank < 0) throw Bad(doc, "winogrande", "field 'sentence' has no '_' blank to fill");
        string answer = PythonValues.Str(doc.Fields.GetValueOrDefault("answer"));
        long gold = answer switch
        {
            "1" => 0,
            "2" => 1,
            _ => throw Bad(doc, "winogrande", $"field 'answer' is '{answer}', expected \"1\" or \"2\" (the hub's test split has no answers: score the validation split)"),
        };
        string prefix = sentence[..blank];
        return doc.With([
            new("gold", gold),
            new("contexts", new List<object?> { prefix + Text(doc, "option1"), prefix + Text(doc, "option2") }),
            new("continuation", sentence[(blank + 1)..].Trim()),
        ]);
    }

    static string Text(Doc doc, string field) =>
        doc.Fields.TryGetValue(field, out var v) && v is string s ? s
        : throw new TaskException($"row {doc.Origin}: field '{field}' (text) is missing or not a string; fields: {string.Join(", ", doc.Fields.Keys)}");

    static long Int(Doc doc, string field, string pre) => doc.Fields.GetValueOrDefault(field) switch
    {
        long l => l,
        string s when long.TryParse(s, out long l) => l,
        var v => throw Bad(doc, pre, $"field '{field}' is {PythonValues.Repr(v)}, expected an integer"),
    };

    /// <summary>Python's str.capitalize.</summary>
    static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    static TaskException Bad(Doc doc, string pre, string problem) => new($"row {doc.Origin}: process_docs {pre}: {problem}");
}
