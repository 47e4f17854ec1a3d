using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Boolean attention masks in the convention of scaled_dot_product_attention: true = this query may attend to
/// this key. Every row must keep at least one true entry (a fully masked row gives NaN).
/// </summary>
public static class AttentionMask
{
    /// <summary>
    /// (T, S) causal mask aligned bottom-right: query i (the i-th of the T newest tokens) sees keys 0..S-T+i.
    /// This is what a KV cache with S-T cached tokens needs; SDPA's own is_causal flag aligns top-left instead,
    /// which is only right when T == S. With a <paramref name="window"/> W (sliding-window attention, Mistral;
    /// transformers' sliding_window_causal_mask) a query also sees only the W newest keys up to itself:
    /// key j is visible to query position p iff p - W &lt; j &lt;= p.
    /// </summary>
    public static Tensor Causal(long queryLength, long keyLength, Device device, int? window = null)
    {
        if (keyLength < queryLength) throw new ArgumentException($"causal mask needs keyLength ({keyLength}) >= queryLength ({queryLength})");
        if (window is < 1) throw new ArgumentException($"an attention window must hold at least one key, got {window}");
        var causal = ones(queryLength, keyLength, ScalarType.Bool, device).tril(keyLength - queryLength);
        if (window is not int w) return causal;
        using (causal) return causal.triu(keyLength - queryLength - w + 1);
    }

    /// <summary>
    /// (B, 1, T, T) block-diagonal causal mask for packed rows: token i sees token j iff j &lt;= i and both belong to the
    /// same packed sequence, so several documents share one row without attending to each other.
    /// Pair it with position ids that restart at 0 for every sequence.
    /// </summary>
    /// <param name="sequenceIds">(B, T) integer id of the packed sequence each token belongs to.</param>
    public static Tensor BlockCausal(Tensor sequenceIds)
    {
        using var scope = NewDisposeScope();
        long t = sequenceIds.shape[1];
        var same = sequenceIds.unsqueeze(2).eq(sequenceIds.unsqueeze(1));     // (B, T, T)
        var causal = Causal(t, t, sequenceIds.device);                          // (T, T)
        return same.logical_and(causal).unsqueeze(1).MoveToOuterDisposeScope(); // (B, 1, T, T): broadcast over heads
    }
}
