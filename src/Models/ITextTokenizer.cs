namespace QLoraNet.Models;

/// <summary>
/// A model's tokenizer as everything above it uses it (generation, evaluation, the training data pipeline): text to
/// ids with the model's own BOS/EOS rule or an explicit one, and back. Families implement it per tokenizer file
/// kind (SentencePiece tokenizer.model today, Hugging Face tokenizer.json later); <see cref="TextTokenizers"/>
/// picks the implementation for a model directory.
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Ids of <paramref name="text"/> with BOS/EOS as the model's tokenizer config says (Llama: BOS only).</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>Ids of <paramref name="text"/> encoded as a fresh input, with BOS before and/or EOS after as asked.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos, bool addEos);

    /// <summary>Text of <paramref name="ids"/>; special tokens (BOS, EOS, padding) are dropped, like HF's skip_special_tokens.</summary>
    string Decode(IEnumerable<int> ids);

    int BosId { get; }
    int EosId { get; }

    /// <summary>Filler for right padding; never attended to and never a label, so any valid id works.</summary>
    int PadId { get; }

    int VocabSize { get; }
}
