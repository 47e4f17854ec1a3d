using System.Diagnostics;

namespace QLoraNet.Evaluation.Scoring;

/// <summary>
/// Greedy generation for <c>generate_until</c> tasks, as the harness's HFLM <c>generate_until</c>: the context is
/// encoded whole (with BOS) and left-truncated to max length - max_gen_toks; generation stops at EOS, at a stop
/// string or after max_gen_toks; the text is then cut before the first occurrence of any stop string (the model's
/// EOS text counts as one). One request at a time (the harness batches with left padding; greedy results are the
/// same up to rounding). With a chat prompt (<see cref="IChatPrompt"/>, <c>--apply-chat-template</c>) the context is
/// the user message of a chat turn instead, and generation also stops at the template's end-of-turn tokens.
/// </summary>
public static class GenerationRunner
{
    public static IReadOnlyList<string> Run(IScoringModel model, IReadOnlyList<string> contexts, IReadOnlyList<string> until,
        int maxGenToks, string taskName, IProgress<EvalProgress>? progress, CancellationToken cancel = default, IChatPrompt? chat = null)
    {
        int maxContext = model.MaxLength - maxGenToks;
        if (maxContext <= 0)
            throw new TaskException($"task '{taskName}': max_gen_toks {maxGenToks} leaves no room for a context in the model's {model.MaxLength} tokens");
        var results = new string[contexts.Count];
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < contexts.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var ids = chat?.Encode(contexts[i]) ?? model.Encode(contexts[i]);
            if (ids.Count > maxContext) ids = ids.Skip(ids.Count - maxContext).ToList();
            results[i] = CutAtStop(model.GenerateUntil(ids, until, maxGenToks, chat?.EndOfTurnIds ?? []), until);
            progress?.Report(new EvalProgress(taskName, "generations", i + 1, contexts.Count, clock.Elapsed));
        }
        return results;
    }

    /// <summary>The text before the first occurrence of each stop string in turn (the harness's split(term)[0]).</summary>
    public static string CutAtStop(string text, IReadOnlyList<string> until)
    {
        foreach (string stop in until)
            if (stop.Length > 0)
            {
                int at = text.IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0) text = text[..at];
            }
        return text;
    }
}
