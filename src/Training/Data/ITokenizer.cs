namespace QLoraNet.Training.Data;

/// <summary>
/// What the data pipeline needs from a tokenizer: text to ids with optional BOS/EOS, and back. Kept minimal so
/// the Llama SentencePiece adapter here can be swapped for the Models layer's wrapper later.
/// </summary>
public interface ITokenizer
{
    /// <summary>Ids of <paramref name="text"/>, with BOS before and/or EOS after as asked.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos, bool addEos);

    /// <summary>Text of <paramref name="ids"/>; BOS/EOS/pad ids are skipped.</summary>
    string Decode(IEnumerable<int> ids);

    int BosId { get; }
    int EosId { get; }

    /// <summary>Filler for right padding; never attended to and never a label, so any valid id works.</summary>
    int PadId { get; }

    int VocabSize { get; }
}
