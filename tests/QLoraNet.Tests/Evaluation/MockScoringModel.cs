using QLoraNet.Evaluation.Scoring;

namespace QLoraNet.Tests.Evaluation;

/// <summary>
/// A scoring model for tests: a character-level tokenizer (BOS = 1, char c = c + 3, no merges), so every request's
/// context and continuation can be read back as text; log-likelihoods and generations come from the functions given.
/// </summary>
public sealed class MockScoringModel(Func<string, string, double>? logLikelihood = null, Func<string, string>? generate = null) : IScoringModel
{
    public const int Bos = 1;
    public readonly List<(string Context, string Continuation)> Requests = new();
    public readonly List<string> Prompts = new();
    public readonly List<IReadOnlyList<int>> StopIds = new();
    public readonly List<int> BatchSizes = new();

    public IReadOnlyList<int> Encode(string text) => [Bos, .. EncodeWithoutSpecialTokens(text)];
    public IReadOnlyList<int> EncodeWithoutSpecialTokens(string text) => text.Select(c => c + 3).ToList();
    public string Decode(IReadOnlyList<int> ids) => new(ids.Where(i => i > 2).Select(i => (char)(i - 3)).ToArray());
    public int PrefixTokenId => Bos;
    public IReadOnlyList<int> EosIds => [2];
    public int MaxLength => 1 << 20;

    public IReadOnlyList<ContinuationScore> Score(IReadOnlyList<ScoringRow> rows)
    {
        BatchSizes.Add(rows.Count);
        return rows.Select(r =>
        {
            string cont = Decode(r.Continuation);
            string ctx = Decode(r.Input.Take(r.Input.Count - r.Continuation.Count + 1).ToList());
            Requests.Add((ctx, cont));
            return new ContinuationScore(logLikelihood?.Invoke(ctx, cont) ?? -cont.Length, false);
        }).ToList();
    }

    public string GenerateUntil(IReadOnlyList<int> contextIds, IReadOnlyList<string> until, int maxNewTokens, IReadOnlyList<int> stopIds)
    {
        StopIds.Add(stopIds);
        string prompt = Decode(contextIds);
        Prompts.Add(prompt);
        return generate?.Invoke(prompt) ?? "";
    }
}
