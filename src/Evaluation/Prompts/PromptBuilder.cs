using System.Text;

namespace QLoraNet.Evaluation.Prompts;

/// <summary>
/// Builds a row's prompt as the harness's <c>fewshot_context</c> does without a chat template: the description, then
/// each few-shot example as text + target_delimiter + answer + fewshot_delimiter, then the row's own text. The answer of
/// an example is its choice at the target index, or its target text. For tasks with one context per choice
/// (Winogrande) the examples show their gold context and the row gives one prompt per choice.
/// </summary>
public sealed class PromptBuilder(DocRenderer renderer, FewShotSampler? sampler, bool multipleInput)
{
    /// <summary>One context (or one per choice when the task has multiple inputs).</summary>
    public IReadOnlyList<string> Contexts(Doc doc, int numFewshot, bool excludeScoredRow)
    {
        var task = renderer.Task;
        var prefix = new StringBuilder(renderer.Description(doc));
        if (numFewshot > 0)
        {
            if (sampler is null) throw new TaskException($"{task.SourceFile}: task '{task.Name}' has no split to draw {numFewshot} few-shot examples from");
            foreach (var shot in sampler.Sample(numFewshot, excludeScoredRow ? doc : null))
            {
                object q = renderer.Text(shot);
                var choices = task.DocToChoice.IsSet ? renderer.Choices(shot) : null;
                object a = renderer.Target(shot);
                if (a is string { Length: 0 })
                {
                    // The harness writes an example without an answer as its text alone, with no delimiters.
                    prefix.Append(q is string qs ? qs : choices![(int)(long)q]);
                    continue;
                }
                if (multipleInput)
                {
                    q = choices![(int)(long)q];
                    choices = null;
                }
                string answer = a switch
                {
                    long i when choices != null => i >= 0 && i < choices.Count ? choices[(int)i]
                        : throw new TaskException($"{task.SourceFile}: task '{task.Name}' few-shot row {shot.Origin}: target index {i} is outside its {choices.Count} choices"),
                    string s => s,
                    _ => PythonValues.Str(a),
                };
                prefix.Append((string)q).Append(task.TargetDelimiter).Append(answer).Append(task.FewshotDelimiter);
            }
        }
        object text = renderer.Text(doc);
        if (!multipleInput) return [prefix + (string)text];
        return renderer.Choices(doc).Select(c => prefix + c).ToList();
    }
}
