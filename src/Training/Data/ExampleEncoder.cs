using QLoraNet.Models;

namespace QLoraNet.Training.Data;

/// <summary>
/// Tokenizes rendered segments and masks them: prompt tokens get label -100 unless <c>trainOnInputs</c>, response
/// tokens (with their EOS) are trained. Then the truncation policy for a too-long example: keep its first
/// <c>maxSeqLen</c> tokens (the prompt and as much of the response as fits; the EOS is lost), and drop it when no
/// trained token survives, e.g. a prompt longer than the limit.
/// </summary>
public sealed class ExampleEncoder(ITextTokenizer tokenizer, int maxSeqLen, bool trainOnInputs)
{
    public enum Outcome { Kept, Truncated, Dropped }

    public (TokenizedExample? Example, Outcome Outcome) Encode(IReadOnlyList<Segment> segments)
    {
        var ids = new List<int>();
        var labels = new List<int>();
        foreach (var s in segments)
        {
            var piece = tokenizer.Encode(s.Text, s.Bos, s.Eos);
            bool trained = s.Trained || trainOnInputs;
            foreach (var id in piece)
            {
                ids.Add(id);
                labels.Add(trained ? id : TokenizedExample.IgnoreIndex);
            }
        }
        if (labels.Count > 0) labels[0] = TokenizedExample.IgnoreIndex;

        var outcome = Outcome.Kept;
        if (ids.Count > maxSeqLen)
        {
            ids.RemoveRange(maxSeqLen, ids.Count - maxSeqLen);
            labels.RemoveRange(maxSeqLen, labels.Count - maxSeqLen);
            outcome = Outcome.Truncated;
        }
        // Labels are shifted by the loss, so label[0] never counts; a trained token must sit at position >= 1.
        if (!labels.Any(l => l != TokenizedExample.IgnoreIndex)) return (null, Outcome.Dropped);
        return (new TokenizedExample(ids.ToArray(), labels.ToArray()), outcome);
    }
}
