using System.Globalization;

namespace QLoraNet.Training.Data;

/// <summary>What the pipeline did to the data, for the run log: counts per split and the policies' effects.</summary>
public sealed record DataStats(
    int TrainExamples,
    int ValidationExamples,
    int TrainSequences,
    int ValidationSequences,
    long TrainTokens,
    long TrainTrainedTokens,
    int MaxSeqLen,
    int Truncated,
    int Dropped,
    int SkippedRows,
    string? FirstSkipReason)
{
    /// <summary>Share of the train sequences' capacity (sequences x max_seq_len) filled with tokens.</summary>
    public double PackingFill => TrainSequences == 0 ? 0 : (double)TrainTokens / ((long)TrainSequences * MaxSeqLen);

    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"train: {TrainExamples} examples in {TrainSequences} sequences ({TrainTokens:N0} tokens, {TrainTrainedTokens:N0} trained, {PackingFill * 100:F0}% of max_seq_len {MaxSeqLen} filled); "
        + $"validation: {ValidationExamples} examples in {ValidationSequences} sequences; "
        + $"truncated {Truncated}, dropped {Dropped} (no response token within max_seq_len), skipped bad rows {SkippedRows}");
}
