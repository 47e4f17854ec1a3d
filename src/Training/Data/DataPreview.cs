using QLoraNet.Models;

namespace QLoraNet.Training.Data;

/// <summary>A run of consecutive tokens of a row with one role: text, and whether the loss trains on it.</summary>
/// <param name="Special">a BOS/EOS id, shown as &lt;s&gt; / &lt;/s&gt; (never tokenized text).</param>
public sealed record PreviewSpan(string Text, bool Trained, bool Special = false);

/// <summary>One training row as the model sees it: its spans, tokens, trained tokens and examples packed in it.</summary>
public sealed record PreviewRow(int Index, IReadOnlyList<PreviewSpan> Spans, int Tokens, int TrainedTokens, int Examples);

/// <summary>
/// What the data pipeline feeds the model, computed without the model (`train --preview`): the first rows of
/// epoch 0's order decoded into trained and masked spans, and the pipeline's figures: examples, truncated and
/// dropped, tokens and trained tokens, rows after packing, and how much of epoch 0's micro-batches is padding
/// (rows are padded to the longest row of their micro-batch).
/// </summary>
public sealed record DataPreview(IReadOnlyList<PreviewRow> Rows, DataStats Stats, int MicroBatches, long BatchCells, long PaddingCells)
{
    /// <summary>Share of the micro-batches' token slots (rows x longest row) that are padding.</summary>
    public double PaddingFraction => BatchCells == 0 ? 0 : (double)PaddingCells / BatchCells;

    public static DataPreview Build(TrainingData data, ITextTokenizer tokenizer, int rows, int microBatchSize)
    {
        var order = data.TrainBatches(0, microBatchSize).ToList();
        long cells = order.Sum(b => (long)b.Rows * b.Length);
        long padding = cells - order.Sum(b => (long)Enumerable.Range(0, b.Rows).Sum(r => RowLength(b, r)));
        var shown = new List<PreviewRow>();
        foreach (var (batch, r) in order.SelectMany(b => Enumerable.Range(0, b.Rows).Select(r => (b, r))).Take(rows))
        {
            int length = RowLength(batch, r);
            var ids = batch.InputIds.Skip(r * batch.Length).Take(length).Select(i => (int)i).ToArray();
            var labels = batch.Labels.Skip(r * batch.Length).Take(length).ToArray();
            var docs = batch.DocumentIds.Skip(r * batch.Length).Take(length).ToArray();
            // The loss at position i predicts token i+1 from labels shifted by one, so label[i] marks token i as trained.
            var trained = labels.Select(l => l != TokenizedExample.IgnoreIndex).ToArray();
            shown.Add(new PreviewRow(shown.Count, Spans(ids, trained, tokenizer), length, trained.Count(t => t), (int)(docs.Length == 0 ? 0 : docs.Max())));
        }
        return new DataPreview(shown, data.Stats, order.Count, cells, padding);
    }

    static int RowLength(Batch b, int row)
    {
        int n = b.Length;
        while (n > 0 && b.DocumentIds[row * b.Length + n - 1] == 0) n--;
        return n;
    }

    /// <summary>Splits a row at every change of trained/masked and at BOS/EOS; text decoded by prefix so spaces survive.</summary>
    static IReadOnlyList<PreviewSpan> Spans(int[] ids, bool[] trained, ITextTokenizer tokenizer)
    {
        var spans = new List<PreviewSpan>();
        int start = 0;
        while (start < ids.Length)
        {
            if (ids[start] == tokenizer.BosId || ids[start] == tokenizer.EosId)
            {
                spans.Add(new PreviewSpan(ids[start] == tokenizer.BosId ? "<s>" : "</s>", trained[start], Special: true));
                start++;
                continue;
            }
            int end = start;
            while (end < ids.Length && trained[end] == trained[start] && ids[end] != tokenizer.BosId && ids[end] != tokenizer.EosId) end++;
            spans.Add(new PreviewSpan(SpanText(ids, start, end, tokenizer), trained[start]));
            start = end;
        }
        return spans;
    }

    /// <summary>The text of ids[start..end] as it reads after what precedes it (SentencePiece drops a leading space at a cut).</summary>
    static string SpanText(int[] ids, int start, int end, ITextTokenizer tokenizer)
    {
        int from = start;
        while (from > 0 && ids[from - 1] != tokenizer.BosId && ids[from - 1] != tokenizer.EosId) from--;
        string before = tokenizer.Decode(ids[from..start]);
        string all = tokenizer.Decode(ids[from..end]);
        return all.StartsWith(before, StringComparison.Ordinal) ? all[before.Length..] : tokenizer.Decode(ids[start..end]);
    }
}
