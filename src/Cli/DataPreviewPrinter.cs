using System.Globalization;
using System.Text;
using QLoraNet.Models;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;

namespace QLoraNet.Cli;

/// <summary>
/// Prints `train CONFIG --preview N`: the tokenizer and data only (no weights), the first N rows of epoch 0 with the
/// trained tokens marked (green on a terminal, {{ }} otherwise; masked prompt tokens plain), each row's token
/// counts, then the pipeline's figures. The cheap check before a long run, like axolotl's `preprocess --debug`.
/// </summary>
public static class DataPreviewPrinter
{
    public static void Print(TrainConfig config, int rows, TextWriter stdout, bool colour)
    {
        var tokenizer = TextTokenizers.Load(config.Model.Path);
        var data = TrainingData.Build(config.Data, tokenizer, config.Training.Seed);
        var preview = DataPreview.Build(data, tokenizer, rows, config.Training.MicroBatchSize);
        stdout.WriteLine(colour
            ? "trained tokens in \u001b[32mgreen\u001b[0m, masked (prompt) tokens plain; <s> </s> are the BOS/EOS ids"
            : "trained tokens in {{ }}, masked (prompt) tokens plain; <s> </s> are the BOS/EOS ids");
        var s = preview.Stats;
        foreach (var row in preview.Rows)
        {
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"--- row {row.Index}: {row.Tokens} tokens, {row.TrainedTokens} trained, {(s.Pairs ? "one preference pair (chosen, then rejected)" : $"{row.Examples} example(s)")}"));
            var text = new StringBuilder();
            foreach (var span in row.Spans)
                text.Append(!span.Trained ? span.Text : colour ? $"\u001b[32m{span.Text}\u001b[0m" : "{{" + span.Text + "}}");
            stdout.WriteLine(text.ToString());
        }
        stdout.WriteLine("---");
        if (s.Pairs)
        {
            stdout.WriteLine(s.Describe());
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{preview.MicroBatches} micro-batches of {config.Training.MicroBatchSize} pairs per epoch, padding {preview.PaddingFraction * 100:F1}% of their token slots"));
            return;
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"examples: {s.TrainExamples} train, {s.ValidationExamples} validation; truncated {s.Truncated}, dropped {s.Dropped} (no trained token within max_seq_len {s.MaxSeqLen}), skipped bad rows {s.SkippedRows}"));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"tokens: {s.TrainTokens:N0} train, {s.TrainTrainedTokens:N0} trained ({(s.TrainTokens == 0 ? 0 : 100.0 * s.TrainTrainedTokens / s.TrainTokens):F1}%)"));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"rows: {s.TrainSequences} train{(config.Data.Packing ? " after packing" : "")} ({s.PackingFill * 100:F1}% of rows x max_seq_len filled), {s.ValidationSequences} validation; "
            + $"{preview.MicroBatches} micro-batches of {config.Training.MicroBatchSize} per epoch, padding {preview.PaddingFraction * 100:F1}% of their token slots"));
    }
}
