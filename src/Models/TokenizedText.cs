namespace QLoraNet.Models;

/// <summary>
/// A text's token ids with, for each, the index in the text of its first character (<see cref="Starts"/>), so that
/// a caller can tell which tokens come from which part of the text (the chat templates mark the trained parts by
/// character ranges). A token the tokenizer adds (BOS before, EOS after) starts at 0 / at the text's length.
/// </summary>
public sealed record TokenizedText(IReadOnlyList<int> Ids, IReadOnlyList<int> Starts)
{
    public static TokenizedText Empty { get; } = new([], []);
}
