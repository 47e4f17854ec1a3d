using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace QLoraNet.Models;

/// <summary>
/// The Llama SentencePiece tokenizer of a model directory (tokenizer.model), with the BOS/EOS behaviour of its
/// tokenizer_config.json (add_bos_token, add_eos_token; Hugging Face's LlamaTokenizer defaults are true/false).
/// Wraps Microsoft.ML.Tokenizers' LlamaTokenizer, which reproduces SentencePiece's ids for the Llama-2 model.
/// </summary>
public sealed class LlamaTextTokenizer
{
    readonly LlamaTokenizer tokenizer;

    LlamaTextTokenizer(LlamaTokenizer tokenizer) => this.tokenizer = tokenizer;

    public static LlamaTextTokenizer Load(string modelDir)
    {
        string modelPath = Path.Combine(modelDir, "tokenizer.model");
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"{modelPath} not found: the model directory needs the SentencePiece tokenizer.model (only Llama SentencePiece tokenizers are supported)");
        var (addBos, addEos) = ReadSpecialTokenFlags(Path.Combine(modelDir, "tokenizer_config.json"));
        return new LlamaTextTokenizer(SentencePieceFile.Create(modelPath, addBos, addEos));
    }

    public int BosId => tokenizer.BeginningOfSentenceId;
    public int EosId => tokenizer.EndOfSentenceId;
    public bool AddsBos => tokenizer.AddBeginningOfSentence;
    public bool AddsEos => tokenizer.AddEndOfSentence;
    public int VocabSize => tokenizer.Vocabulary.Count;

    /// <summary>Token ids of <paramref name="text"/>, with BOS/EOS as tokenizer_config.json says.</summary>
    public IReadOnlyList<int> Encode(string text) => tokenizer.EncodeToIds(text);

    /// <summary>Token ids without BOS/EOS (for pieces of a template that are concatenated).</summary>
    public IReadOnlyList<int> EncodeWithoutSpecialTokens(string text) =>
        tokenizer.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false);

    /// <summary>Text of <paramref name="ids"/>; special tokens (BOS, EOS, UNK) are dropped, like HF's skip_special_tokens.</summary>
    public string Decode(IEnumerable<int> ids) => tokenizer.Decode(ids, considerSpecialTokens: false);

    static (bool AddBos, bool AddEos) ReadSpecialTokenFlags(string configPath)
    {
        if (!File.Exists(configPath)) return (true, false);
        using var doc = QLoraNet.Formats.UserFile.ReadJson(configPath, what: "tokenizer config");
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{configPath}: expected a JSON object");
        return (Flag(doc.RootElement, "add_bos_token", true), Flag(doc.RootElement, "add_eos_token", false));

        bool Flag(JsonElement root, string name, bool fallback) =>
            root.TryGetProperty(name, out var v) ? v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                JsonValueKind.Null => fallback,
                _ => throw new InvalidDataException($"{configPath}: {name} must be true or false, got {QLoraNet.Formats.SafeText.Clip(v.GetRawText(), 40)}"),
            } : fallback;
    }
}
