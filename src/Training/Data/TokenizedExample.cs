namespace QLoraNet.Training.Data;

/// <summary>
/// One example as ids and labels of the same length. Labels follow the Hugging Face convention: label[i] is the
/// id at position i when that token is trained and <see cref="IgnoreIndex"/> (-100) when not; the loss shifts by
/// one (logits at i predict label[i + 1]). The first label is always ignored: nothing precedes it, and in a packed
/// sequence this keeps an example from being trained to follow the previous one.
/// </summary>
public sealed record TokenizedExample(int[] InputIds, int[] Labels)
{
    public const int IgnoreIndex = -100;

    public int Length => InputIds.Length;

    public int TrainedTokens => Labels.Count(l => l != IgnoreIndex);
}
