using TorchSharp;
using QLoraNet.Training.Data;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Next-token cross-entropy summed over the trained tokens (position t predicts label t+1; -100 does not count).
/// The trainer divides by the trained tokens of the whole optimizer step, across its accumulated micro-batches,
/// so every token weighs the same however the batches are padded or split (as transformers' num_items_in_batch).
/// </summary>
public static class TokenLoss
{
    /// <param name="logits">(B, T, vocab)</param>
    /// <param name="labels">(B, T) int64</param>
    /// <returns>scalar fp32 sum</returns>
    public static Tensor Sum(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        long t = logits.shape[1], vocab = logits.shape[2];
        var predicted = logits.narrow(1, 0, t - 1).to(ScalarType.Float32).reshape(-1, vocab); // (B*(T-1), vocab)
        var targets = labels.narrow(1, 1, t - 1).reshape(-1);                                 // (B*(T-1))
        return F.cross_entropy(predicted, targets, ignore_index: TokenizedExample.IgnoreIndex, reduction: nn.Reduction.Sum)
            .MoveToOuterDisposeScope();
    }

    /// <summary>Tokens that <see cref="Sum"/> counts for a batch: labels other than -100 at positions 1..T-1.</summary>
    public static long Counted(Batch b)
    {
        long n = 0;
        for (int r = 0; r < b.Rows; r++)
            for (int i = 1; i < b.Length; i++)
                if (b.Labels[r * b.Length + i] != TokenizedExample.IgnoreIndex) n++;
        return n;
    }
}
