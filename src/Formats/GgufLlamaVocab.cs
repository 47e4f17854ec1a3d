using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// The <c>tokenizer.ggml.*</c> vocabulary of a SentencePiece Llama, built the way llama.cpp's converter does it
/// (convert_hf_to_gguf.py _create_vocab_sentencepiece and gguf-py SpecialVocab):
/// <list type="bullet">
/// <item>one entry per id up to config.json's vocab_size; ids the tokenizer lacks become "[PAD{id}]", score -10000, UNUSED;</item>
/// <item>token types from the piece types: UNKNOWN, CONTROL, UNUSED and BYTE carry over; NORMAL and USER_DEFINED
///   pieces are NORMAL (the converter asks IsUnknown/IsControl/IsUnused/IsByte and defaults to NORMAL);</item>
/// <item>added_tokens.json entries are USER_DEFINED, tokenizer_config.json added_tokens_decoder entries CONTROL when
///   special (else USER_DEFINED, with ▁ turned into a space); both get score -1000;</item>
/// <item>bos/eos/pad ids from config.json (the first eos when it is a list); unk from the piece typed UNKNOWN;
///   add_bos_token / add_eos_token from tokenizer_config.json when it sets them.</item>
/// </list>
/// Token type values are llama.cpp's LLAMA_TOKEN_TYPE (gguf-py TokenType): the same numbers as SentencePiece's.
/// </summary>
public sealed record GgufLlamaVocab(
    IReadOnlyList<string> Tokens,
    IReadOnlyList<float> Scores,
    IReadOnlyList<int> TokenTypes,
    int? BosId, int? EosId, int? UnkId, int? PadId,
    bool? AddBos, bool? AddEos) : IGgufVocab
{
    public const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    public static GgufLlamaVocab Load(string modelDir, int vocabSize)
    {
        var spm = SentencePieceModel.Load(modelDir);
        var tokens = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new int[vocabSize];
        for (int id = 0; id < vocabSize; id++)
        {
            if (id < spm.Pieces.Count)
            {
                var p = spm.Pieces[id];
                (tokens[id], scores[id], types[id]) = (p.Text, p.Score, TokenType(p.Type));
            }
            else (tokens[id], scores[id], types[id]) = ($"[PAD{id}]", -10000f, Unused);
        }

        var addedTokens = ReadJson(Path.Combine(modelDir, "added_tokens.json"));
        if (addedTokens is { ValueKind: JsonValueKind.Object } added)
            foreach (var kv in added.EnumerateObject())
                if (kv.Value.TryGetInt32(out int id) && id >= 0 && id < vocabSize)
                    (tokens[id], scores[id], types[id]) = (kv.Name, -1000f, UserDefined);

        var tokenizerConfig = ReadJson(Path.Combine(modelDir, "tokenizer_config.json"));
        if (tokenizerConfig is { ValueKind: JsonValueKind.Object } tc && tc.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object)
            foreach (var kv in decoder.EnumerateObject())
            {
                if (!int.TryParse(kv.Name, out int id) || id < 0 || id >= vocabSize) continue;
                if (kv.Value.ValueKind != JsonValueKind.Object) continue;
                string content = kv.Value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()! : "";
                bool special = kv.Value.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                if (special || LooksSpecial(content)) (tokens[id], types[id]) = (content, Control);
                else (tokens[id], types[id]) = (content.Replace('\u2581', ' '), UserDefined);
                scores[id] = -1000f;
            }

        var config = ReadJson(Path.Combine(modelDir, ModelArchitecture.ConfigFileName));
        int? unk = Array.IndexOf(types, Unknown) is var u and >= 0 ? u : null;
        return new GgufLlamaVocab(tokens, scores, types,
            BosId: Id(config, "bos_token_id", vocabSize),
            EosId: Id(config, "eos_token_id", vocabSize),
            UnkId: unk,
            PadId: Id(config, "pad_token_id", vocabSize),
            AddBos: Flag(tokenizerConfig, "add_bos_token"),
            AddEos: Flag(tokenizerConfig, "add_eos_token"));
    }

    /// <summary>The tokenizer.ggml keys: model "llama" (SentencePiece), pre-tokenizer "default".</summary>
    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata()
    {
        var kv = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue v) => kv.Add(new(key, v));
        Add("tokenizer.ggml.model", GgufValue.String("llama"));
        Add("tokenizer.ggml.pre", GgufValue.String("default"));
        Add("tokenizer.ggml.tokens", GgufValue.StringArray(Tokens));
        Add("tokenizer.ggml.scores", GgufValue.Float32Array(Scores));
        Add("tokenizer.ggml.token_type", GgufValue.Int32Array(TokenTypes));
        GgufBpeVocab.AddSpecialIds(kv, BosId, EosId, UnkId, PadId, AddBos, AddEos);
        return kv;
    }

    static int TokenType(SentencePieceModel.PieceType t) => t switch
    {
        SentencePieceModel.PieceType.Unknown => Unknown,
        SentencePieceModel.PieceType.Control => Control,
        SentencePieceModel.PieceType.Unused => Unused,
        SentencePieceModel.PieceType.Byte => Byte,
        _ => Normal,
    };

    /// <summary>Added tokens the converter treats as control even when not flagged special (does_token_look_special).</summary>
    internal static bool LooksSpecial(string t) =>
        t is "<pad>" or "<mask>" or "<2mass>" or "[@BOS@]"
        || (t.StartsWith("<|") && t.EndsWith("|>"))
        || (t.StartsWith("<\uFF5C") && t.EndsWith("\uFF5C>"))
        || (t.StartsWith("<unused") && t.EndsWith('>'));

    static JsonElement? ReadJson(string path)
    {
        if (!File.Exists(path)) return null;
        using var doc = UserFile.ReadJson(path);
        return doc.RootElement.Clone();
    }

    static int? Id(JsonElement? json, string key, int vocabSize)
    {
        if (json is not { ValueKind: JsonValueKind.Object } o || !o.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind == JsonValueKind.Array) v = v.EnumerateArray().FirstOrDefault();
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int id) && id >= 0 && id < vocabSize ? id : null;
    }

    static bool? Flag(JsonElement? json, string key) =>
        json is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? v.GetBoolean() : null;
}
