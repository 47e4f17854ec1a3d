namespace QLoraNet.Formats;

/// <summary>
/// The <c>tokenizer.ggml.*</c> vocabulary of a byte-level BPE tokenizer.json (Llama 3, Qwen2), built the way
/// llama.cpp's converter does it (conversion/base.py get_vocab_base / _set_vocab_gpt2, gguf-py SpecialVocab):
/// <list type="bullet">
/// <item>model "gpt2"; tokens are the vocabulary's byte-level spellings ("Ġthe"), one per id up to config.json's
///   vocab_size, ids nobody names "[PAD{id}]" UNUSED; added tokens CONTROL when special (or looking special, as
///   does_token_look_special says), else USER_DEFINED; the rest NORMAL;</item>
/// <item>merges as "left right" strings in rank order (a space inside a part written as U+0120, as SpecialVocab does);</item>
/// <item>tokenizer.ggml.pre names the pre-tokenizer llama.cpp re-implements (llama-vocab.cpp): the Split regex of
///   Llama 3 is "llama-bpe" (which also sets ignore_merges), Qwen2's (digits one at a time) is "qwen2". llama.cpp
///   picks the name by hashing the tokenization of a probe text with the original tokenizer; QLoraNet matches the
///   regex itself, and any other regex (or an ignore_merges that contradicts the name) is refused by name;</item>
/// <item>bos/eos/pad from tokenizer_config.json's bos_token/eos_token/pad_token, else config.json's ids;
///   add_bos_token as QLoraNet's tokenizer adds it: tokenizer_config.json's add_bos_token, else whether the
///   post-processor's template starts with a special token (Llama 3 yes; Qwen2Tokenizer never adds one).</item>
/// </list>
/// </summary>
public sealed record GgufBpeVocab(
    IReadOnlyList<string> Tokens,
    IReadOnlyList<int> TokenTypes,
    IReadOnlyList<string> Merges,
    string Pre,
    int? BosId, int? EosId, int? PadId,
    bool AddBos, bool AddEos) : IGgufVocab
{
    /// <summary>Llama 3's Split regex (llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3, "original regex from tokenizer.json").</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2's (LLAMA_VOCAB_PRE_TYPE_QWEN2): Llama 3's with single digits.</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public static GgufBpeVocab Load(string modelDir, int vocabSize)
    {
        string path = TokenizerJson.Find(modelDir) ?? throw new FileNotFoundException($"{modelDir}: no tokenizer.json or tokenizer.model to export");
        var spec = TokenizerJson.Load(path);
        var config = TokenizerConfigJson.Load(modelDir);
        bool qwen2Class = config.TokenizerClassBase == "Qwen2Tokenizer";   // transformers builds it in code: Qwen2's regex, no BOS
        var patterns = qwen2Class ? [Qwen2Pattern] : spec.SplitPatterns;
        bool ignoreMerges = !qwen2Class && spec.IgnoreMerges;
        string pre = patterns.Count == 1 && patterns[0] == Llama3Pattern && ignoreMerges ? "llama-bpe"
            : patterns.Count == 1 && patterns[0] == Qwen2Pattern && !ignoreMerges ? "qwen2"
            : throw new NotSupportedException($"{path}: the pre-tokenizer ({string.Join(" then ", patterns.Select(p => $"Split '{p}'"))}, ignore_merges {ignoreMerges}) is not one llama.cpp names (llama-bpe: Llama 3's regex with ignore_merges; qwen2: Qwen2's without)");

        var tokens = new string[vocabSize];
        var types = new int[vocabSize];
        for (int id = 0; id < vocabSize; id++) (tokens[id], types[id]) = ($"[PAD{id}]", GgufLlamaVocab.Unused);
        foreach (var (token, id) in spec.Vocab)
            if (id >= 0 && id < vocabSize) (tokens[id], types[id]) = (token, GgufLlamaVocab.Normal);
        var added = spec.AddedTokens.Concat(config.AddedTokens).GroupBy(t => t.Id).Select(g => g.First()).ToList();
        foreach (var t in added)
        {
            if (t.Id < 0 || t.Id >= vocabSize) continue;
            bool control = t.Special || GgufLlamaVocab.LooksSpecial(t.Content);
            (tokens[t.Id], types[t.Id]) = control ? (t.Content, GgufLlamaVocab.Control) : (t.Content.Replace('\u2581', ' '), GgufLlamaVocab.UserDefined);
        }

        int? IdOf(string? content) => content is null ? null
            : added.FirstOrDefault(t => t.Content == content)?.Id ?? (spec.Vocab.TryGetValue(content, out int v) ? v : null);
        var hf = HfConfigJson.Load(modelDir);
        var eosIds = hf.TokenIds("eos_token_id", vocabSize);
        var prefix = qwen2Class ? [] : spec.PrefixIds;
        var suffix = qwen2Class ? [] : spec.SuffixIds;
        return new GgufBpeVocab(tokens, types,
            spec.Merges.Select(m => $"{SpaceFree(m.Left)} {SpaceFree(m.Right)}").ToList(),
            pre,
            BosId: IdOf(config.BosToken) ?? hf.TokenId("bos_token_id", vocabSize),
            EosId: IdOf(config.EosToken) ?? (eosIds.Count > 0 ? eosIds[0] : null),
            PadId: IdOf(config.PadToken) ?? (hf.Int("pad_token_id") is int p && p >= 0 && p < vocabSize ? p : null),   // old Llama configs say -1: none
            AddBos: config.AddBosToken ?? prefix.Count > 0,
            AddEos: config.AddEosToken ?? suffix.Count > 0);
    }

    /// <summary>A space inside a merge part as U+0120 (gguf-py SpecialVocab: chr(ord(' ') + 256)), so "a b" splits once.</summary>
    static string SpaceFree(string part) => part.Replace(' ', '\u0120');

    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata()
    {
        var kv = new List<KeyValuePair<string, GgufValue>>
        {
            new("tokenizer.ggml.model", GgufValue.String("gpt2")),
            new("tokenizer.ggml.pre", GgufValue.String(Pre)),
            new("tokenizer.ggml.tokens", GgufValue.StringArray(Tokens)),
            new("tokenizer.ggml.token_type", GgufValue.Int32Array(TokenTypes)),
            new("tokenizer.ggml.merges", GgufValue.StringArray(Merges)),
        };
        AddSpecialIds(kv, BosId, EosId, null, PadId, AddBos, AddEos);
        return kv;
    }

    /// <summary>The special ids and add_bos/add_eos flags, whichever are known (gguf-py SpecialVocab.add_to_gguf).</summary>
    internal static void AddSpecialIds(List<KeyValuePair<string, GgufValue>> kv, int? bos, int? eos, int? unk, int? pad, bool? addBos, bool? addEos)
    {
        if (bos is int b) kv.Add(new("tokenizer.ggml.bos_token_id", GgufValue.UInt32((uint)b)));
        if (eos is int e) kv.Add(new("tokenizer.ggml.eos_token_id", GgufValue.UInt32((uint)e)));
        if (unk is int u) kv.Add(new("tokenizer.ggml.unknown_token_id", GgufValue.UInt32((uint)u)));
        if (pad is int p) kv.Add(new("tokenizer.ggml.padding_token_id", GgufValue.UInt32((uint)p)));
        if (addBos is bool ab) kv.Add(new("tokenizer.ggml.add_bos_token", GgufValue.Bool(ab)));
        if (addEos is bool ae) kv.Add(new("tokenizer.ggml.add_eos_token", GgufValue.Bool(ae)));
    }
}
