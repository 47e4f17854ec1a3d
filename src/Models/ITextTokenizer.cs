namespace QLoraNet.Models;

/// <summary>
/// A model's tokenizer as everything above it uses it (generation, evaluation, the training data pipeline, the
/// tokenize verb): text to ids exactly as transformers 5.17 tokenizes it, with the model's own BOS/EOS rule or an
/// explicit one, and back. Added and special tokens written in the text ("&lt;|eot_id|&gt;", "&lt;/s&gt;") become
/// their ids, as in transformers. Implementations: <see cref="SentencePieceTextTokenizer"/> (tokenizer.model:
/// Llama 2, Mistral, Gemma) and <see cref="ByteLevelBpeTextTokenizer"/> (tokenizer.json: Llama 3, Qwen2);
/// <see cref="TextTokenizers"/> picks one for a model directory.
/// </summary>
public interface ITextTokenizer
{
    /// <summary>Ids of <paramref name="text"/> with the tokenizer's default special tokens (transformers' <c>tokenizer(text)</c>).</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>Ids of <paramref name="text"/> encoded as a fresh input, with BOS before and/or EOS after as asked (no BOS when the model has none).</summary>
    IReadOnlyList<int> Encode(string text, bool addBos, bool addEos)
    {
        var ids = new List<int>();
        if (addBos && BosId is int bos) ids.Add(bos);
        ids.AddRange(Tokenize(text, addSpecialTokens: false).Ids);
        if (addEos) ids.Add(EosId);
        return ids;
    }

    /// <summary>
    /// Ids and where each starts in <paramref name="text"/>; with <paramref name="addSpecialTokens"/> false it is
    /// transformers' <c>tokenizer(text, add_special_tokens=False)</c>, as <c>apply_chat_template</c> tokenizes.
    /// </summary>
    TokenizedText Tokenize(string text, bool addSpecialTokens);

    /// <summary>Text of <paramref name="ids"/>; special tokens (BOS, EOS, padding, turn markers) are dropped, like HF's skip_special_tokens.</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>What one token stands for, for display: a special token as written, otherwise its decoded text.</summary>
    string PieceText(int id);

    /// <summary>The id of a token written as one string (an added token such as "&lt;|eot_id|&gt;", or a vocabulary entry); null when it is none.</summary>
    int? TokenId(string token);

    /// <summary>Whether <paramref name="id"/> is a special token (dropped by <see cref="Decode"/>).</summary>
    bool IsSpecial(int id);

    /// <summary>The beginning-of-sequence token; null when the model has none (Qwen2).</summary>
    int? BosId { get; }

    int EosId { get; }

    /// <summary>Filler for right padding; never attended to and never a label, so any valid id works.</summary>
    int PadId { get; }

    int VocabSize { get; }
}
