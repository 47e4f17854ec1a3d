using System.Text.Json;
using QLoraNet.Evaluation.Scoring;
using QLoraNet.Tests.Models;

namespace QLoraNet.Tests.Evaluation;

/// <summary>Skips with the reason when tests/fixtures/eval/loglik_reference.json is not there yet.</summary>
public sealed class ReferenceFactAttribute : FactAttribute
{
    public static string File => Path.Combine(EvalFixtures.Dir, "loglik_reference.json");

    public ReferenceFactAttribute()
    {
        if (!System.IO.File.Exists(File))
            Skip = "tests/fixtures/eval/loglik_reference.json (transformers' log-likelihoods of 20 pairs, made on the GPU machine) is not in the repo yet";
    }
}

/// <summary>
/// Parity with transformers as the harness runs it: for each (context, continuation) pair of the reference file
/// (shape in tests/fixtures/eval/README.md), the harness's tokenization gives the same ids and our log-likelihood
/// equals transformers' fp32 one. Tolerance 1e-4 absolute: two fp32 implementations (libtorch CPU here, the reference
/// machine's kernels there) of the same forward, summed over a few tokens.
/// </summary>
public class ReferenceParityTests(TinyLlamaFixture tiny) : IClassFixture<TinyLlamaFixture>
{
    [ReferenceFact]
    public void Loglikelihoods_equal_transformers()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(ReferenceFactAttribute.File));
        var pairs = doc.RootElement.GetProperty("pairs").EnumerateArray().ToList();
        Assert.True(pairs.Count >= 20, $"expected 20 pairs, found {pairs.Count}");
        var scorer = new LlamaScoringModel(tiny.Model, tiny.Tokenizer, 1024, [tiny.Tokenizer.EosId]);
        var requests = pairs.Select(p => new LoglikelihoodRequest(p.GetProperty("context").GetString()!, p.GetProperty("continuation").GetString()!)).ToList();
        var scores = LoglikelihoodRunner.Run(scorer, requests, batchSize: 4, "reference", null);
        for (int i = 0; i < pairs.Count; i++)
        {
            var p = pairs[i];
            var (ctx, cont) = HarnessEncoding.EncodePair(scorer, requests[i].Context, requests[i].Continuation);
            if (p.TryGetProperty("context_ids", out var ci)) Assert.Equal(ci.EnumerateArray().Select(x => x.GetInt32()), ctx);
            if (p.TryGetProperty("continuation_ids", out var co)) Assert.Equal(co.EnumerateArray().Select(x => x.GetInt32()), cont);
            double expected = p.GetProperty("loglikelihood").GetDouble();
            Assert.True(Math.Abs(expected - scores[i].LogProb) <= 1e-4, $"pair {i}: ours {scores[i].LogProb}, transformers {expected}");
            if (p.TryGetProperty("is_greedy", out var g)) Assert.Equal(g.GetBoolean(), scores[i].IsGreedy);
        }
    }
}
