using QLoraNet.Evaluation.Scoring;
using QLoraNet.Models;
using QLoraNet.Tests.Models;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Evaluation;

/// <summary>
/// The log-likelihood engine on the real tiny Llama (fp32, CPU): a pair's score equals the full-sequence forward's
/// token log-probs summed over the continuation, and batching with right padding does not change scores.
/// </summary>
[Trait("tier", "unit")]
public class TinyModelLoglikelihoodTests : IClassFixture<TinyLlamaFixture>
{
    readonly LlamaScoringModel scorer;
    readonly TinyLlamaFixture tiny;

    static readonly LoglikelihoodRequest[] Pairs =
    [
        new("Question: How much is the Traverse 65 backpack?\nAnswer:", " $229.00"),
        new("Call me Ishmael. Some years ago", ", never mind how long precisely"),
        new("The Congress of the United States ", "shall have power"),   // trailing space moves to the continuation
        new("It was the best of times,", " it was the worst of times."),
        new("", "Hello world"),                                            // empty context: BOS stands for it
        new("Fellow citizens", " of the Senate and House of Representatives"),
        new("A", " B"),
        new("We the people of the United States, in order to form a more perfect union,", " establish justice"),
        new("Whale", "bone"),                                              // may merge across the boundary
    ];

    public TinyModelLoglikelihoodTests(TinyLlamaFixture tiny)
    {
        this.tiny = tiny;
        scorer = new LlamaScoringModel(tiny.Model, tiny.Tokenizer);
    }

    /// <summary>Sum of log p(continuation token | prefix) from one forward over context + continuation.</summary>
    double FullSequence(IReadOnlyList<int> ctx, IReadOnlyList<int> cont)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(ctx.Concat(cont).Select(i => (long)i).ToArray()).unsqueeze(0);      // (1, T)
        var logProbs = F.log_softmax(tiny.Model.forward(ids)[0], -1);                         // (T, vocab)
        double sum = 0;
        for (int i = 0; i < cont.Count; i++) sum += logProbs[ctx.Count - 1 + i, cont[i]].item<float>();
        return sum;
    }

    [Fact]
    public void Pair_scores_equal_the_full_sequence_forward()
    {
        var scores = LoglikelihoodRunner.Run(scorer, Pairs, batchSize: 1, "t", null);
        for (int i = 0; i < Pairs.Length; i++)
        {
            var (ctx, cont) = HarnessEncoding.EncodePair(scorer, Pairs[i].Context, Pairs[i].Continuation);
            double expected = FullSequence(ctx, cont);
            // Same kernels on the same rows, summed in fp64 here and there: 1e-5 covers fp32 rounding of a sum of
            // at most ~12 log-probs of magnitude < 20 (12 * 20 * 2^-24 ~ 1.4e-5 worst case, far less in practice).
            Assert.True(Math.Abs(expected - scores[i].LogProb) <= 1e-5, $"pair {i}: {scores[i].LogProb} vs {expected}");
            Assert.True(scores[i].LogProb < 0);
        }
    }

    [Fact]
    public void Harness_encoding_moves_trailing_space_and_splits_the_whole_string()
    {
        var (ctx, cont) = HarnessEncoding.EncodePair(scorer, "The Congress of the United States ", "shall have power");
        Assert.Equal(tiny.Tokenizer.Encode("The Congress of the United States"), ctx);
        var whole = tiny.Tokenizer.Encode("The Congress of the United States shall have power");
        Assert.Equal(whole.Skip(ctx.Count), cont);
        Assert.Equal(1, ctx[0]);                                                              // BOS
        var (empty, hello) = HarnessEncoding.EncodePair(scorer, "", "Hello world");
        Assert.Equal([tiny.Tokenizer.BosId!.Value], empty);
        Assert.Equal(tiny.Tokenizer.Tokenize("Hello world", addSpecialTokens: false).Ids, hello);
    }

    [Fact]
    public void Batch_of_eight_with_padding_equals_batch_of_one()
    {
        var one = LoglikelihoodRunner.Run(scorer, Pairs, batchSize: 1, "t", null);
        var eight = LoglikelihoodRunner.Run(scorer, Pairs, batchSize: 8, "t", null);
        for (int i = 0; i < Pairs.Length; i++)
        {
            // Padding only changes the matrix shapes, hence the order of fp32 additions inside the kernels: a logit
            // over hidden 256 moves by at most ~256 * 2^-24 * sum|w x| (about 1e-4 relative at worst through 4
            // layers); the summed log-prob of a short continuation stays within 1e-4 absolute.
            Assert.True(Math.Abs(one[i].LogProb - eight[i].LogProb) <= 1e-4, $"pair {i}: {one[i].LogProb} vs {eight[i].LogProb}");
            Assert.Equal(one[i].IsGreedy, eight[i].IsGreedy);
        }
    }

    [Fact]
    public void Greedy_flag_is_true_exactly_for_the_models_own_continuation()
    {
        var ctx = tiny.Tokenizer.Encode("Fellow citizens of the");
        var generated = TextGenerator.Generate(tiny.Model, ctx, new GenerationOptions(MaxNewTokens: 4));   // greedy
        var own = new ScoringRow(ctx.Concat(generated.Take(generated.Count - 1)).ToList(), generated);
        var changed = generated.Take(3).Append(generated[3] == 500 ? 501 : 500).ToList();
        var other = new ScoringRow(ctx.Concat(changed.Take(3)).ToList(), changed);
        var r = scorer.Score([own, other]);
        Assert.True(r[0].IsGreedy);
        Assert.False(r[1].IsGreedy);
        Assert.True(r[0].LogProb > r[1].LogProb);
    }
}
