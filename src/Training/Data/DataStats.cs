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

    /// <summary>Preference data: each example is a pair and each sequence holds one (its two conversations).</summary>
    public bool Pairs { get; init; }

    public string Describe() => Pairs
        ? string.Create(CultureInfo.InvariantCulture,
            $"train: {TrainExamples} preference pairs, one per row ({TrainTokens:N0} tokens, {TrainTrainedTokens:N0} in answers); validation: {ValidationExamples} pairs; "
            + $"conversations truncated {Truncated}, pairs dropped {Dropped} (an answer without a token within max_seq_len {MaxSeqLen}), skipped bad rows {SkippedRows}")
        : string.Create(CultureInfo.InvariantCulture,
        $"train: {TrainExamples} examples in {TrainSequences} sequences ({TrainTokens:N0} tokens, {TrainTrainedTokens:N0} trained, {PackingFill * 100:F0}% of max_seq_len {MaxSeqLen} filled); "
        + $"validation: {ValidationExamples} examples in {ValidationSequences} sequences; "
        + $"truncated {Truncated}, dropped {Dropped} (no response token within max_seq_len), skipped bad rows {SkippedRows}");
}
