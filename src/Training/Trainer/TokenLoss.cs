using QLoraNet.Training.Data;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// How many tokens <see cref="QLoraNet.Models.CausalLmLoss.Sum"/> counts in a batch: labels other than -100 at
/// positions 1..T-1 (position t predicts label t+1). The trainer divides a step's summed loss by this, over all of
/// the step's micro-batches.
/// </summary>
public static class TokenLoss
{
    public static long Counted(Batch b)
    {
        long n = 0;
        for (int r = 0; r < b.Rows; r++)
            for (int i = 1; i < b.Length; i++)
                if (b.Labels[r * b.Length + i] != TokenizedExample.IgnoreIndex) n++;
        return n;
    }
}
