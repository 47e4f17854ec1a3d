namespace QLoraNet.Evaluation.Scoring;

/// <summary>
/// How lm-evaluation-harness turns a (context, continuation) pair into tokens (lm_eval/api/model.py
/// <c>_encode_pair</c> and <c>loglikelihood</c>), so the same text scores the same tokens:
/// <list type="bullet">
/// <item>Trailing whitespace of the context moves to the front of the continuation ("Answer: " + "B" scores " B").</item>
/// <item>The whole string is encoded once and the context alone once; the continuation is the whole's tokens after
/// the context's count. A token that merges across the boundary therefore counts as continuation, and the context
/// keeps its own tokenization (with the BOS the tokenizer adds).</item>
/// <item>An empty context becomes the prefix token (BOS), unless the continuation already starts with it.</item>
/// </list>
/// </summary>
public static class HarnessEncoding
{
    public static (IReadOnlyList<int> Context, IReadOnlyList<int> Continuation) EncodePair(IScoringModel model, string context, string continuation)
    {
        if (context.Length == 0)
        {
            var cont = model.EncodeWithoutSpecialTokens(continuation);
            if (cont.Count == 0) throw new TaskException("a request with an empty context and an empty continuation scores nothing");
            return cont[0] != model.PrefixTokenId ? ([model.PrefixTokenId], cont) : (cont.Take(1).ToList(), cont.Skip(1).ToList());
        }
        int kept = context.TrimEnd().Length;
        if (kept < context.Length)
        {
            continuation = context[kept..] + continuation;
            context = context[..kept];
        }
        var whole = model.Encode(context + continuation);
        var ctx = model.Encode(context);
        return (ctx, whole.Skip(ctx.Count).ToList());
    }
}
