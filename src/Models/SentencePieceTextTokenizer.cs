using System.Text.Json;
using Microsoft.ML.Tokenizers;
using QLoraNet.Formats;

namespace QLoraNet.Models;

/// <summary>
/// A SentencePiece tokenizer.model (Llama 2) through Microsoft.ML.Tokenizers' LlamaTokenizer, which reproduces
/// SentencePiece's ids (<c>"Hello world!"</c> -> 1, 15043, 3186, 29991 with BOS). The file is read once, by
/// <see cref="SentencePieceModel"/>. The default BOS/EOS rule comes from tokenizer_config.json (add_bos_token,
/// add_eos_token; Hugging Face's LlamaTokenizer defaults are true/false). Every call encodes its text as a fresh
/// SentencePiece input, so the dummy-prefix space is added at its start; the prompt templates rely on that.
/// Llama 2 has no pad token: padding uses &lt;unk&gt; (id 0), as is usual for Llama 2 fine-tuning.
/// </summary>
public sealed class SentencePieceTextTokenizer : ITextTokenizer
{
    readonly LlamaTokenizer tokenizer;
    readonly bool addBos, addEos;

    SentencePieceTextTokenizer(LlamaTokenizer tokenizer, bool addBos, bool addEos) =>
        (this.tokenizer, this.addBos, this.addEos) = (tokenizer, addBos, addEos);

    /// <summary>Loads tokenizer.model (and tokenizer_config.json's flags) from a model directory.</summary>
    public static SentencePieceTextTokenizer Load(string modelDir)
    {
        string path = SentencePieceModel.Find(modelDir) ?? throw new FileNotFoundException(
            $"{Path.Combine(modelDir, SentencePieceModel.FileName)} not found: the model directory needs its SentencePiece tokenizer.model (the only tokenizer kind supported so far)",
            Path.Combine(modelDir, SentencePieceModel.FileName));
        var model = SentencePieceModel.Load(path);
        var (bos, eos) = ReadSpecialTokenFlags(Path.Combine(modelDir, "tokenizer_config.json"));
        try
        {
            using var stream = new MemoryStream(model.Serialized, writable: false);
            return new SentencePieceTextTokenizer(LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false), bos, eos);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Whatever Microsoft.ML.Tokenizers' own protobuf parser throws on a damaged file, as one line naming it.
            throw new InvalidDataException($"{path}: not a SentencePiece model ({SafeText.Clip(e.Message.Split('\n')[0], 120)})");
        }
    }

    public IReadOnlyList<int> Encode(string text) => Encode(text, addBos, addEos);

    public IReadOnlyList<int> Encode(string text, bool addBos, bool addEos) =>
        tokenizer.EncodeToIds(text, addBos, addEos, considerPreTokenization: true, considerNormalization: true);

    public string Decode(IEnumerable<int> ids) => tokenizer.Decode(ids.Where(i => i != PadId), considerSpecialTokens: false);

    public int BosId => tokenizer.BeginningOfSentenceId;
    public int EosId => tokenizer.EndOfSentenceId;
    public int PadId => tokenizer.UnknownId;
    public int VocabSize => tokenizer.Vocabulary.Count;

    static (bool AddBos, bool AddEos) ReadSpecialTokenFlags(string configPath)
    {
        if (!File.Exists(configPath)) return (true, false);
        using var doc = UserFile.ReadJson(configPath, what: "tokenizer config");
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{configPath}: expected a JSON object");
        return (Flag(doc.RootElement, "add_bos_token", true), Flag(doc.RootElement, "add_eos_token", false));

        bool Flag(JsonElement root, string name, bool fallback) =>
            root.TryGetProperty(name, out var v) ? v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                JsonValueKind.Null => fallback,
                _ => throw new InvalidDataException($"{configPath}: {name} must be true or false, got {SafeText.Clip(v.GetRawText(), 40)}"),
            } : fallback;
    }
}
