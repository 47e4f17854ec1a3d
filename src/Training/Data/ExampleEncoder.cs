using System.Text;
using QLoraNet.Models;

namespace QLoraNet.Training.Data;

/// <summary>
/// Tokenizes rendered segments and masks them: prompt tokens get label -100 unless <c>trainOnInputs</c>, response
/// tokens (with their end-of-turn token) are trained. Segments are tokenized each on its own (with BOS/EOS ids as
/// flagged) or, for the Hugging Face chat templates, as one text (<see cref="Tokenize"/>). Then the truncation policy
/// for a too-long example: keep its first <c>maxSeqLen</c> tokens (the prompt and as much of the response as fits;
/// the end-of-turn token is lost), and drop it when no trained token survives, e.g. a prompt longer than the limit.
/// </summary>
public sealed class ExampleEncoder(ITextTokenizer tokenizer, int maxSeqLen, bool trainOnInputs)
{
    public enum Outcome { Kept, Truncated, Dropped }

    public (TokenizedExample? Example, Outcome Outcome) Encode(IReadOnlyList<Segment> segments) => Encode(segments, wholeText: false);

    public (TokenizedExample? Example, Outcome Outcome) Encode(PromptTemplates.Rendered rendered) => Encode(rendered.Segments, rendered.WholeText);

    public (TokenizedExample? Example, Outcome Outcome) Encode(IReadOnlyList<Segment> segments, bool wholeText)
    {
        var (ids, trained) = Tokenize(tokenizer, segments, wholeText);
        var labels = new List<int>(ids.Count);
        for (int k = 0; k < ids.Count; k++) labels.Add(trained[k] || trainOnInputs ? ids[k] : TokenizedExample.IgnoreIndex);
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

    /// <summary>
    /// The ids of the segments and, for each, whether it belongs to a trained segment. Whole text: the texts are
    /// joined and tokenized once without added special tokens (apply_chat_template's ids), and a token is trained when
    /// its first character lies in a trained segment; a token spanning a segment boundary counts for the segment it
    /// starts in. Otherwise each segment is a fresh input with BOS/EOS ids as flagged.
    /// </summary>
    public static (List<int> Ids, List<bool> Trained) Tokenize(ITextTokenizer tokenizer, IReadOnlyList<Segment> segments, bool wholeText)
    {
        var ids = new List<int>();
        var trained = new List<bool>();
        if (!wholeText)
        {
            foreach (var s in segments)
                foreach (int id in tokenizer.Encode(s.Text, s.Bos, s.Eos)) { ids.Add(id); trained.Add(s.Trained); }
            return (ids, trained);
        }

        var text = new StringBuilder();
        var spans = new List<(int Start, int End)>();
        foreach (var s in segments)
        {
            if (s.Bos || s.Eos) throw new ArgumentException("a whole-text template writes BOS/EOS as text, not as segment flags");
            if (s.Trained && s.Text.Length > 0) spans.Add((text.Length, text.Length + s.Text.Length));
            text.Append(s.Text);
        }
        var t = tokenizer.Tokenize(text.ToString(), addSpecialTokens: false);
        int span = 0;
        for (int k = 0; k < t.Ids.Count; k++)
        {
            int start = t.Starts[k];
            while (span < spans.Count && spans[span].End <= start) span++;
            ids.Add(t.Ids[k]);
            trained.Add(span < spans.Count && spans[span].Start <= start);
        }
        return (ids, trained);
    }
}
