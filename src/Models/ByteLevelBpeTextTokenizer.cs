using System.Text;
using Microsoft.ML.Tokenizers;
using QLoraNet.Formats;
using QLoraNet.Models.Tokenization;

namespace QLoraNet.Models;

/// <summary>
/// A Hugging Face tokenizer.json byte-level BPE (Llama 3, Qwen2), reproducing the tokenizers library's pipeline:
/// <list type="number">
/// <item>added tokens (special or not) are found in the raw text first (<see cref="AddedTokenSplitter"/>);</item>
/// <item>the text between them is normalized (NFC when the file says so, <see cref="UnicodeNfc"/>), then tokens
/// marked <c>normalized</c> are found in it;</item>
/// <item>the Split regexes cut it into pre-tokens (<see cref="RegexSplitter"/>); ByteLevel spells each in GPT-2's
/// byte alphabet (<see cref="ByteLevelAlphabet"/>), after a prefix space if asked;</item>
/// <item>each pre-token is one token when <c>ignore_merges</c> is set and the vocabulary holds it whole (Llama 3),
/// else the BPE merges apply: Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> does that step (it has no
/// ignore_merges, hence the lookup here);</item>
/// <item>the post-processor's special tokens (Llama 3's BOS) go around the text when special tokens are added;
/// tokenizer_config.json's add_bos_token/add_eos_token, where given, decide instead.</item>
/// </list>
/// Decoding maps tokens back to bytes and reads them as UTF-8 (invalid sequences become U+FFFD, like transformers).
/// </summary>
public sealed class ByteLevelBpeTextTokenizer : ITextTokenizer
{
    readonly TokenizerJson spec;
    readonly BpeTokenizer bpe;
    readonly Dictionary<string, int> vocab;
    readonly Dictionary<int, string> tokenById = [];
    readonly Dictionary<int, AddedTokenSpec> addedById = [];
    readonly AddedTokenSplitter rawAdded, normalizedAdded;
    readonly RegexSplitter splitter;
    readonly IReadOnlyList<int> prefixIds, suffixIds;

    ByteLevelBpeTextTokenizer(TokenizerJson spec, TokenizerConfigJson config, string dir)
    {
        this.spec = spec;
        vocab = new Dictionary<string, int>(spec.Vocab, StringComparer.Ordinal);
        foreach (var (token, id) in vocab) tokenById[id] = token;
        foreach (var t in spec.AddedTokens.Concat(config.AddedTokens))
            if (!addedById.ContainsKey(t.Id)) addedById[t.Id] = t;
        rawAdded = new AddedTokenSplitter(addedById.Values.Where(t => !t.Normalized));
        normalizedAdded = new AddedTokenSplitter(addedById.Values.Where(t => t.Normalized));
        splitter = new RegexSplitter(spec.SplitPatterns, spec.Path);
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab) { Merges = spec.Merges.Select(m => $"{m.Left} {m.Right}").ToList() });
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or FormatException)
        {
            // Microsoft.ML.Tokenizers' own checks (a merge of tokens not in the vocabulary, ...), as one line naming the file.
            throw new InvalidDataException($"{spec.Path}: model.merges do not fit model.vocab ({QLoraNet.Formats.SafeText.Clip(e.Message, 160)})");
        }

        BosId = config.BosToken is { } bos ? TokenId(bos) ?? throw Missing(dir, "bos_token", bos) : null;
        EosId = config.EosToken is { } eos ? TokenId(eos) ?? throw Missing(dir, "eos_token", eos)
            : spec.SuffixIds.Count > 0 ? spec.SuffixIds[^1]
            : throw new InvalidDataException($"{Path.Combine(dir, TokenizerConfigJson.FileName)}: names no eos_token; training and generation need the end-of-sequence token");
        PadId = config.PadToken is { } pad && TokenId(pad) is int p ? p : EosId;
        VocabSize = Math.Max(vocab.Count == 0 ? 0 : vocab.Values.Max(), addedById.Count == 0 ? 0 : addedById.Keys.Max()) + 1;
        prefixIds = Adjust(spec.PrefixIds, config.AddBosToken, BosId, before: true);
        suffixIds = Adjust(spec.SuffixIds, config.AddEosToken, EosId, before: false);
    }

    /// <summary>The tokenizer of a parsed tokenizer.json and the model directory's tokenizer_config.json.</summary>
    public static ByteLevelBpeTextTokenizer Create(TokenizerJson spec, TokenizerConfigJson config, string modelDir) => new(spec, config, modelDir);

    /// <summary>The parsed tokenizer.json, for the GGUF vocabulary.</summary>
    public TokenizerJson Spec => spec;

    public int? BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int VocabSize { get; }

    public IReadOnlyList<int> Encode(string text) => Tokenize(text, addSpecialTokens: true).Ids;

    public TokenizedText Tokenize(string text, bool addSpecialTokens)
    {
        var ids = new List<int>();
        var starts = new List<int>();
        if (addSpecialTokens) foreach (int id in prefixIds) { ids.Add(id); starts.Add(0); }
        foreach (var piece in rawAdded.Split(text, 0, text.Length))
        {
            if (piece.TokenId is int id) { ids.Add(id); starts.Add(piece.Start); }
            else EncodeChunk(text, piece.Start, piece.Length, ids, starts);
        }
        if (addSpecialTokens) foreach (int id in suffixIds) { ids.Add(id); starts.Add(text.Length); }
        return new TokenizedText(ids, starts);
    }

    void EncodeChunk(string text, int start, int length, List<int> ids, List<int> starts)
    {
        string chunk = text.Substring(start, length);
        int[]? map = null;
        if (spec.Nfc) chunk = UnicodeNfc.Shared.Normalize(chunk, out map);
        int Origin(int i) => start + (map == null ? i : i < map.Length ? map[i] : length);

        var pieces = normalizedAdded.IsEmpty ? [new AddedTokenSplitter.Piece(0, chunk.Length, null)] : normalizedAdded.Split(chunk, 0, chunk.Length);
        foreach (var piece in pieces)
        {
            if (piece.TokenId is int id) { ids.Add(id); starts.Add(Origin(piece.Start)); continue; }
            string part = chunk.Substring(piece.Start, piece.Length);
            foreach (var (s, l) in splitter.Split(part))
                EncodeWord(part.Substring(s, l), i => Origin(piece.Start + s + i), ids, starts);
        }
    }

    /// <summary>One pre-token: ByteLevel spelling, then one vocabulary hit (ignore_merges) or the BPE merges.</summary>
    void EncodeWord(string word, Func<int, int> origin, List<int> ids, List<int> starts)
    {
        int shift = 0;
        if (spec.AddPrefixSpace && word[0] != ' ') { word = " " + word; shift = 1; }
        byte[] bytes = Encoding.UTF8.GetBytes(word);
        string spelled = ByteLevelAlphabet.Spell(bytes);
        if (spec.IgnoreMerges && vocab.TryGetValue(spelled, out int whole))
        {
            ids.Add(whole);
            starts.Add(origin(0));
            return;
        }
        // The char of the word each byte belongs to, to place every token at its first character.
        var charOfByte = new int[bytes.Length];
        for (int c = 0, b = 0; c < word.Length; c++)
        {
            int n = char.IsSurrogatePair(word, c) ? 4 : Encoding.UTF8.GetByteCount(word.AsSpan(c, 1));
            for (int k = 0; k < n && b < bytes.Length; k++) charOfByte[b++] = c;
            if (n == 4) c++;
        }
        int at = 0;
        foreach (int id in bpe.EncodeToIds(spelled, considerPreTokenization: false, considerNormalization: false))
        {
            ids.Add(id);
            starts.Add(origin(Math.Max(0, charOfByte[Math.Min(at, bytes.Length - 1)] - shift)));
            at += tokenById.TryGetValue(id, out var t) ? t.Length : 1;
        }
    }

    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (addedById.TryGetValue(id, out var added))
            {
                if (added.Special) continue;
                Flush();
                sb.Append(added.Content);
            }
            else if (tokenById.TryGetValue(id, out var token) && !ByteLevelAlphabet.TryAppendBytes(token, bytes))
            {
                Flush();
                sb.Append(token);
            }
        }
        Flush();
        return sb.ToString();

        void Flush()
        {
            if (bytes.Count == 0) return;
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
    }

    public string PieceText(int id)
    {
        if (addedById.TryGetValue(id, out var added)) return added.Content;
        if (!tokenById.TryGetValue(id, out var token)) return $"<id {id}>";
        var bytes = new List<byte>();
        return ByteLevelAlphabet.TryAppendBytes(token, bytes) ? Encoding.UTF8.GetString(bytes.ToArray()) : token;
    }

    public int? TokenId(string token)
    {
        foreach (var t in addedById.Values) if (t.Content == token) return t.Id;
        return vocab.TryGetValue(token, out int id) ? id : null;
    }

    public bool IsSpecial(int id) => addedById.TryGetValue(id, out var t) && t.Special;

    static IReadOnlyList<int> Adjust(IReadOnlyList<int> ids, bool? wanted, int? token, bool before) => (wanted, token) switch
    {
        (true, int t) when !ids.Contains(t) => (before ? ids.Prepend(t) : ids.Append(t)).ToList(),
        (false, int t) => ids.Where(i => i != t).ToList(),
        _ => ids,
    };

    static InvalidDataException Missing(string dir, string key, string token) =>
        new($"{Path.Combine(dir, TokenizerConfigJson.FileName)}: {key} {QLoraNet.Formats.SafeText.Quote(token, 60)} is not a token of {TokenizerJson.FileName}");
}
