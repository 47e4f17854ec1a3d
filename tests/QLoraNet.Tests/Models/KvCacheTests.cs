using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>The cached and masked attention paths against plain full recomputation.</summary>
[Trait("tier", "unit")]
public class KvCacheTests(TinyLlamaFixture tiny) : IClassFixture<TinyLlamaFixture>
{
    static Tensor Ids(IEnumerable<int> ids) { var a = ids.Select(i => (long)i).ToArray(); return tensor(a, [1, a.Length]); }

    [Fact]
    public void Cached_greedy_generation_equals_full_recomputation()
    {
        var prompt = tiny.Cases[1].InputIds;
        var cached = TextGenerator.Generate(tiny.Model, prompt, new GenerationOptions(MaxNewTokens: 16));

        // Without a cache: the whole sequence through the model for every new token.
        var sequence = prompt.ToList();
        using (no_grad())
            for (int step = 0; step < 16; step++)
            {
                using var scope = NewDisposeScope();
                sequence.Add((int)tiny.Model.forward(Ids(sequence))[0, -1].argmax().item<long>());
            }
        Assert.Equal(sequence.Skip(prompt.Length), cached);
    }

    [Fact]
    public void Chunked_prefill_through_the_cache_gives_the_full_forward_logits()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = Ids(tiny.Cases[2].InputIds);                                     // (1, 11)
        var full = tiny.Model.forward(ids);
        using var cache = tiny.Model.NewKvCache(batch: 1, capacity: 16);
        // 4 tokens, then 1 (the single-query path), then 6 (the shifted causal mask path).
        var parts = new[] { (0, 4), (4, 1), (5, 6) }
            .Select(p => tiny.Model.forward(ids.narrow(1, p.Item1, p.Item2), null, null, cache)).ToArray();
        Assert.Equal(11, cache.Length);
        var max = (cat(parts, 1) - full).abs().max().item<float>();
        Assert.True(max < 1e-4, $"max |cached - full| = {max}");
    }

    [Fact]
    public void Packed_rows_with_block_causal_mask_equal_separate_sequences()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var a = tiny.Cases[0].InputIds;
        var b = tiny.Cases[2].InputIds;
        var packed = Ids(a.Concat(b));
        var positions = tensor(Enumerable.Range(0, a.Length).Concat(Enumerable.Range(0, b.Length)).Select(i => (long)i).ToArray(), [1, a.Length + b.Length]);
        var sequenceIds = tensor(a.Select(_ => 0L).Concat(b.Select(_ => 1L)).ToArray(), [1, a.Length + b.Length]);

        var together = tiny.Model.forward(packed, positions, AttentionMask.BlockCausal(sequenceIds), null);
        var separate = cat([tiny.Model.forward(Ids(a)), tiny.Model.forward(Ids(b))], 1);
        var max = (together - separate).abs().max().item<float>();
        Assert.True(max < 1e-4, $"max |packed - separate| = {max}");

        // And the mask is what made the difference: plain causal attention over the packed row leaks a into b.
        var leaky = tiny.Model.forward(packed, positions, null, null);
        Assert.True((leaky - separate).abs().max().item<float>() > 1e-2);
    }

    [Fact]
    public void Causal_mask_is_aligned_to_the_newest_tokens()
    {
        using var mask = AttentionMask.Causal(2, 4, CPU);
        Assert.Equal(new[] { true, true, true, false, true, true, true, true }, mask.data<bool>().ToArray());
    }

    [Fact]
    public void A_full_cache_is_a_one_line_error()
    {
        using var cache = tiny.Model.NewKvCache(batch: 1, capacity: 3);
        using var ids = Ids([1, 450, 377, 744]);
        var e = Assert.Throws<InvalidOperationException>(() => tiny.Model.forward(ids, null, null, cache));
        Assert.Contains("capacity 3", e.Message);
    }
}
