using QLoraNet.Models;
using QLoraNet.Training.Data;
using static TorchSharp.torch;

namespace QLoraNet.Training.Losses;

/// <summary>
/// Supervised fine-tuning's objective, the default: next-token cross-entropy (<see cref="CausalLmLoss"/>), a mean
/// over the trained tokens of the whole step. The terms are the trained tokens the shifted loss sees: labels other
/// than -100 at positions 1..T-1 (position t predicts label t+1). Packed rows get their block-diagonal mask.
/// </summary>
public sealed class CausalLmTokenMeanLoss : ITrainingLoss
{
    public long Count(Batch batch) => CountedTokens(batch);

    public Tensor Sum(LlamaForCausalLM model, Batch batch)
    {
        using var scope = NewDisposeScope();
        var x = batch.ToTensors(model.Device);
        var logits = model.forward(x.InputIds, x.PositionIds, x.AttentionMask, null);   // (B, T, vocab) fp32
        return CausalLmLoss.Sum(logits, x.Labels).MoveToOuterDisposeScope();
    }

    /// <summary>The tokens <see cref="CausalLmLoss.Sum"/> counts in <paramref name="batch"/>.</summary>
    public static long CountedTokens(Batch batch)
    {
        long n = 0;
        for (int r = 0; r < batch.Rows; r++)
            for (int i = 1; i < batch.Length; i++)
                if (batch.Labels[r * batch.Length + i] != TokenizedExample.IgnoreIndex) n++;
        return n;
    }
}
