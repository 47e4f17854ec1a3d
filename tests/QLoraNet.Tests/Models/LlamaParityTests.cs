using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>Numeric parity with Hugging Face transformers on the tiny real model (reference.json: fp32 compute on
/// the bf16 weights).</summary>
[Trait("tier", "parity")]
public class LlamaParityTests(TinyLlamaFixture tiny) : IClassFixture<TinyLlamaFixture>
{
    const double LogitTolerance = 1e-3;

    Tensor LogitsOf(int[] ids)
    {
        using var _ = no_grad();
        using var input = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
        return tiny.Model.forward(input)[0];                                          // (T, vocab)
    }

    [Fact]
    public void Last_position_top5_ids_and_logits_match_transformers()
    {
        foreach (var c in tiny.Cases)
        {
            using var scope = NewDisposeScope();
            var last = LogitsOf(c.InputIds)[-1];
            var (values, ids) = last.topk(5);
            Assert.Equal(c.Top5Ids, ids.data<long>().Select(i => (int)i).ToArray());
            var got = values.data<float>().ToArray();
            for (int k = 0; k < 5; k++) Assert.True(Math.Abs(got[k] - c.Top5Values[k]) < LogitTolerance, $"{c.Prompt}: top{k} logit {got[k]} vs {c.Top5Values[k]}");
        }
    }

    /// <summary>fp32's unit roundoff, 2^-24.</summary>
    const double U32 = 5.9604644775390625e-8;

    [Fact]
    public void First_eight_logits_and_per_position_sums_match_transformers()
    {
        using var _ = no_grad();
        var embedding = tiny.Model.Model.EmbedTokens.Weight;                               // (vocab, hidden), the tied head
        foreach (var c in tiny.Cases)
        {
            using var scope = NewDisposeScope();
            var logits = LogitsOf(c.InputIds);                                               // (T, vocab)
            var first8 = logits[-1, TensorIndex.Slice(0, 8)].data<float>().ToArray();
            for (int k = 0; k < 8; k++) Assert.True(Math.Abs(first8[k] - c.First8Logits[k]) < LogitTolerance, $"{c.Prompt}: logit[{k}] {first8[k]} vs {c.First8Logits[k]}");

            // A sum over 32000 logits: an error anywhere in the row shows up here. Each logit is the final hidden
            // state h (after the last RMSNorm) dotted with an embedding row e_i, a length-256 fp32 accumulation;
            // implementations differ in its order (and, through the layers below, in h's low bits), so the sum may
            // move by the rounding of its terms h_k e_ik. Probabilistic rounding-error analysis (Higham & Mary 2019,
            // "A new approach to probabilistic rounding error analysis", thm 2.4) bounds a length-n accumulation by
            // lambda sqrt(n) u sum|terms| with probability at least 1 - 2 exp(-lambda^2 / 2): lambda = 6, n = 256
            // gives 96 u sum_i sum_k |h_k e_ik| (about 5 on these rows, whose sums are ~1e5; measured differences:
            // up to 0.02 on an Intel Xeon, 0.14 on an AMD EPYC). The reference sums are rounded to 2 decimals.
            var hidden = ForwardHidden(c.InputIds);                                          // (T, hidden)
            var sumAbsTerms = hidden.abs().matmul(embedding.abs().t()).to(ScalarType.Float64).sum(1).data<double>().ToArray();
            var sums = logits.to(ScalarType.Float64).sum(1).data<double>().ToArray();
            for (int t = 0; t < sums.Length; t++)
            {
                double bound = 6 * Math.Sqrt(hidden.shape[1]) * U32 * sumAbsTerms[t] + 0.005;
                Assert.True(Math.Abs(sums[t] - c.LogitSumPerPosition[t]) <= bound,
                    $"{c.Prompt}: position {t} logit sum {sums[t]} vs {c.LogitSumPerPosition[t]} (bound {bound})");
            }
        }
    }

    Tensor ForwardHidden(int[] ids)
    {
        using var input = tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
        return tiny.Model.Model.forward(input)[0];                                       // (T, hidden), normed
    }

    [Fact]
    public void Greedy_continuations_equal_transformers()
    {
        foreach (var c in tiny.Cases)
        {
            var generated = TextGenerator.Generate(tiny.Model, c.InputIds, new GenerationOptions(MaxNewTokens: 24, StopIds: [2]));
            Assert.Equal(c.Greedy24, c.InputIds.Concat(generated).ToArray());
            Assert.Equal(c.GreedyText, tiny.Tokenizer.Decode(generated));
        }
    }

    [Fact]
    public void Heldout_mean_loss_matches_transformers()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = tensor(tiny.HeldoutIds, [1, tiny.HeldoutIds.Length]);
        var loss = CausalLmLoss.Compute(tiny.Model.forward(ids), ids).item<float>();
        Assert.True(Math.Abs(loss - tiny.HeldoutMeanLoss) < 1e-3, $"held-out loss {loss} vs {tiny.HeldoutMeanLoss}");
    }

    [Fact]
    public void Tokenizer_ids_equal_the_reference_input_ids()
    {
        foreach (var c in tiny.Cases) Assert.Equal(c.InputIds, tiny.Tokenizer.Encode(c.Prompt));
    }

    [Fact]
    public void Parameter_names_are_the_hugging_face_state_dict_keys()
    {
        // Frozen linear weights are buffers (never trained), the rest parameters with requires_grad false: the
        // state dict holds both, under Hugging Face's names.
        var names = tiny.Model.state_dict().Keys.ToHashSet();
        Assert.Contains("model.embed_tokens.weight", names);
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", names);
        Assert.Contains("model.layers.3.mlp.down_proj.weight", names);
        Assert.Contains("model.layers.0.input_layernorm.weight", names);
        Assert.Contains("model.norm.weight", names);
        Assert.DoesNotContain(names, n => n.StartsWith("lm_head"));                 // tied: reuses the embedding
        Assert.Equal(4 * 9 + 2, names.Count);
        Assert.All(tiny.Model.parameters(), p => Assert.False(p.requires_grad));
        Assert.DoesNotContain(tiny.Model.state_dict().Keys, k => k.Contains("inv_freq"));
        Assert.Equal(11_094_272, tiny.Model.state_dict().Values.Sum(p => p.numel()));
    }
}
