using System.Diagnostics;

namespace QLoraNet.Evaluation.Scoring;

/// <summary>A log-likelihood request: score <see cref="Continuation"/> after <see cref="Context"/>.</summary>
public sealed record LoglikelihoodRequest(string Context, string Continuation);

/// <summary>
/// Scores many (context, continuation) pairs the way lm-evaluation-harness's HFLM does
/// (<c>_loglikelihood_tokens</c>): encode each pair (<see cref="HarnessEncoding"/>), sort by total length, longest
/// first (ties by the tokens, so the order is deterministic), cut into batches of <c>batchSize</c>, feed each row
/// context + continuation minus the last token (left-truncated to the model's max length + 1), and put the results
/// back in request order. Sorting keeps padding small; right padding with a causal mask leaves every score as a
/// batch of one would give it (to fp32 rounding).
/// </summary>
public static class LoglikelihoodRunner
{
    public static IReadOnlyList<ContinuationScore> Run(IScoringModel model, IReadOnlyList<LoglikelihoodRequest> requests,
        int batchSize, string taskName, IProgress<EvalProgress>? progress, CancellationToken cancel = default)
    {
        if (batchSize < 1) throw new ArgumentException($"batch size must be at least 1, got {batchSize}");
        var encoded = requests.Select(r => HarnessEncoding.EncodePair(model, r.Context, r.Continuation)).ToList();
        for (int i = 0; i < encoded.Count; i++)
        {
            if (encoded[i].Continuation.Count == 0)
                throw new TaskException($"task '{taskName}': the continuation {Quote(requests[i].Continuation)} after context ending {Quote(Tail(requests[i].Context))} encodes to no tokens");
            if (encoded[i].Continuation.Count > model.MaxLength)
                throw new TaskException($"task '{taskName}': a continuation of {encoded[i].Continuation.Count} tokens exceeds the model's {model.MaxLength}");
        }
        var order = Enumerable.Range(0, encoded.Count)
            .OrderByDescending(i => encoded[i].Context.Count + encoded[i].Continuation.Count)
            .ThenBy(i => encoded[i].Context.Concat(encoded[i].Continuation).ToArray(), TokenOrder.Instance)
            .ToList();

        var results = new ContinuationScore[requests.Count];
        var clock = Stopwatch.StartNew();
        for (int start = 0; start < order.Count; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            var chunk = order.Skip(start).Take(batchSize).ToList();
            var rows = chunk.Select(i =>
            {
                var (ctx, cont) = encoded[i];
                var whole = ctx.Concat(cont).ToList();
                // The harness: (context + continuation)[-(max_length + 1):][:-1]
                int keep = Math.Min(whole.Count, model.MaxLength + 1);
                return new ScoringRow(whole.GetRange(whole.Count - keep, keep - 1), cont);
            }).ToList();
            var scores = model.Score(rows);
            for (int j = 0; j < chunk.Count; j++) results[chunk[j]] = scores[j];
            progress?.Report(new EvalProgress(taskName, "log-likelihoods", Math.Min(start + batchSize, order.Count), order.Count, clock.Elapsed));
        }
        return results;
    }

    static string Tail(string s) => s.Length <= 30 ? s : "..." + s[^30..];
    static string Quote(string s) => PythonValues.Repr(s);

    sealed class TokenOrder : IComparer<int[]>
    {
        public static readonly TokenOrder Instance = new();
        public int Compare(int[]? a, int[]? b)
        {
            for (int i = 0; i < Math.Min(a!.Length, b!.Length); i++)
                if (a[i] != b[i]) return a[i].CompareTo(b[i]);
            return a.Length.CompareTo(b.Length);
        }
    }
}
