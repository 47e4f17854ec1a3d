using QLoraNet.Evaluation.Scoring;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Tests.Models.Families;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Evaluation;

/// <summary>
/// Every family scores: the evaluation engine's model adapter over what the CLI and the recipe build
/// (<see cref="ModelBuilder"/> from the unmodified fixture directory, <see cref="TextTokenizers"/> for its tokenizer:
/// SentencePiece for Mistral and Gemma, byte-level BPE for Llama 3 and Qwen2), held to transformers' numbers recorded
/// in each fixture's reference.json, and the harness's request encoding through each family's tokenizer.
/// </summary>
[Trait("tier", "parity")]
public class FamilyScoringTests
{
    /// <summary>
    /// Bound on a log-probability against transformers: log p_c = z_c - logsumexp(z), so an error of at most eps in
    /// every logit moves it by at most 2 eps; eps = 1e-4 is the families' fp32 logit parity bound
    /// (<see cref="FamilyParityTests"/>, where the arithmetic behind it is stated).
    /// </summary>
    const double LogProbBound = 2e-4;

    static BuiltModel Build(string family) =>
        ModelBuilder.Build(FamilyReference.DirOf(family), new ModelBuildOptions(CPU, ScalarType.Float32, BaseFormat.Parse("none")));

    static double LogSoftmaxAt(float[] logits, int id)
    {
        double max = logits.Max();
        double lse = max + Math.Log(logits.Sum(z => Math.Exp(z - max)));
        return logits[id] - lse;
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void One_padded_batch_scores_transformers_log_probs_at_every_reference_prompt(string family)
    {
        // The reference prompts differ in length (13 to 223 ids, the long one past Mistral's and Gemma 2's window),
        // so one batch of all of them pads the short rows: each row's score must still be transformers' number.
        var r = FamilyReference.Of(family);
        using var built = Build(family);
        built.Model.eval();
        var scorer = new LlamaScoringModel(built.Model, TextTokenizers.Load(r.Dir));
        var rows = new List<ScoringRow>();
        var expected = new List<(double LogProb, bool Greedy, string What)>();
        foreach (var c in r.Cases)
        {
            // A one-token continuation predicted by the last position: the greedy token and the fifth best.
            foreach (var (id, greedy) in new[] { (c.Top5Ids[0], true), (c.Top5Ids[4], false) })
            {
                rows.Add(new ScoringRow(c.InputIds, [id]));
                expected.Add((LogSoftmaxAt(c.LastLogits, id), greedy, $"{family} {c.Name} token {id}"));
            }
        }
        var scores = scorer.Score(rows);
        for (int i = 0; i < rows.Count; i++)
        {
            Assert.True(Math.Abs(scores[i].LogProb - expected[i].LogProb) <= LogProbBound,
                $"{expected[i].What}: ours {scores[i].LogProb}, transformers {expected[i].LogProb}");
            // The references' smallest top-1/top-2 margin is 0.087, far above the logit bound: the flag is exact.
            Assert.True(expected[i].Greedy == scores[i].IsGreedy, $"{expected[i].What}: is_greedy {scores[i].IsGreedy}");
        }
    }

    static readonly LoglikelihoodRequest[] Pairs =
    [
        new("Question: How much is the Traverse 65 backpack?\nAnswer:", " $229.00"),
        new("The Squall rain jacket ", "costs $149.00"),                    // trailing space moves to the continuation
        new("", "Hello world"),                                            // empty context: the prefix token stands for it
        new("Return policy: items may be returned within", " 30 days"),
        new("Whale", "bone"),                                              // may merge across the boundary
    ];

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void Harness_pairs_through_the_familys_tokenizer_score_as_one_full_forward(string family)
    {
        using var built = Build(family);
        built.Model.eval();
        var tokenizer = TextTokenizers.Load(FamilyReference.DirOf(family));
        var scorer = new LlamaScoringModel(built.Model, tokenizer);

        // HFLM's prefix_token_id: BOS where the tokenizer has one, else EOS (Qwen2 has no BOS).
        Assert.Equal(tokenizer.BosId ?? tokenizer.EosId, scorer.PrefixTokenId);
        Assert.Equal(family == "qwen2", tokenizer.BosId is null);

        var scores = LoglikelihoodRunner.Run(scorer, Pairs, batchSize: 3, "t", null);
        for (int i = 0; i < Pairs.Length; i++)
        {
            var (ctx, cont) = HarnessEncoding.EncodePair(scorer, Pairs[i].Context, Pairs[i].Continuation);
            if (Pairs[i].Context.Length == 0) Assert.Equal([scorer.PrefixTokenId], ctx);
            else Assert.Equal(tokenizer.Encode(Pairs[i].Context.TrimEnd()), ctx);   // default special tokens, as HFLM
            double full = FullSequence(built.Model, ctx, cont);
            // The same model on the same ids, only batched and padded differently: fp32 reordering inside the
            // kernels (logits of magnitude < 50 over hidden 128, ~1e-6 each) summed over <= 8 tokens stays below 1e-4.
            Assert.True(Math.Abs(full - scores[i].LogProb) <= 1e-4, $"{family} pair {i}: {scores[i].LogProb} vs full forward {full}");
            Assert.True(scores[i].LogProb < 0, $"{family} pair {i}: {scores[i].LogProb}");
        }
    }

    /// <summary>Sum of log p(continuation token | prefix) from one forward over context + continuation, unbatched.</summary>
    static double FullSequence(LlamaForCausalLM model, IReadOnlyList<int> ctx, IReadOnlyList<int> cont)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(ctx.Concat(cont).Select(i => (long)i).ToArray()).unsqueeze(0);      // (1, T)
        var logProbs = F.log_softmax(model.forward(ids)[0], -1);                              // (T, vocab)
        double sum = 0;
        for (int i = 0; i < cont.Count; i++) sum += logProbs[ctx.Count - 1 + i, cont[i]].item<float>();
        return sum;
    }
}
