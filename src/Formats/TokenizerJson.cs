using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> (the serialization of the Rust tokenizers library) of the kind Llama 3 and
/// Qwen2 ship: a byte-level BPE. Only what QLoraNet reproduces exactly is accepted; anything else is refused by name
/// rather than tokenized differently:
/// <list type="bullet">
/// <item>normalizer: none, or NFC (Qwen2), alone or in a Sequence;</item>
/// <item>pre_tokenizer: ByteLevel (GPT-2 regex when <c>use_regex</c>), or a Sequence of Split steps (a regex or
/// string pattern, behavior Isolated, not inverted; Llama 3's and Qwen2's patterns) followed by ByteLevel;</item>
/// <item>model: BPE with vocab and merges ("a b" strings or ["a", "b"] pairs), <c>ignore_merges</c> as given, no
/// byte fallback, no dropout, no subword prefix/suffix;</item>
/// <item>post_processor: none, ByteLevel (offsets only), TemplateProcessing (its <c>single</c> template: the special
/// tokens before and after the text, e.g. Llama 3's BOS), or a Sequence of these;</item>
/// <item>decoder: ByteLevel.</item>
/// </list>
/// Unigram, WordPiece and WordLevel models, SentencePiece-style BPE (Metaspace, byte fallback), other normalizers
/// (NFKC, Lowercase, Precompiled, ...) and other pre-tokenizers (Metaspace, Whitespace, BertPreTokenizer, ...) are
/// errors naming the type.
/// </summary>
public sealed record TokenizerJson
{
    public const string FileName = "tokenizer.json";

    /// <summary>Larger than any released tokenizer.json (Gemma 3's is 33 MB), small enough to refuse a wrong file.</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>Pre-tokenizer regex of GPT-2, which ByteLevel applies when <c>use_regex</c> is true (tokenizers' byte_level.rs).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public required string Path { get; init; }
    public required IReadOnlyDictionary<string, int> Vocab { get; init; }

    /// <summary>Merge rules in priority order (rank = index).</summary>
    public required IReadOnlyList<(string Left, string Right)> Merges { get; init; }

    /// <summary>A pre-token found whole in the vocabulary is one token, without applying merges (Llama 3).</summary>
    public bool IgnoreMerges { get; init; }

    /// <summary>The normalizer is NFC (Qwen2); otherwise there is none.</summary>
    public bool Nfc { get; init; }

    /// <summary>Split regexes applied in order, each isolating its matches; then the ByteLevel step.</summary>
    public required IReadOnlyList<string> SplitPatterns { get; init; }

    /// <summary>ByteLevel's add_prefix_space: a space before each pre-token that does not start with one.</summary>
    public bool AddPrefixSpace { get; init; }

    /// <summary>Special tokens the post-processor puts before/after the text when special tokens are added.</summary>
    public required IReadOnlyList<int> PrefixIds { get; init; }
    public required IReadOnlyList<int> SuffixIds { get; init; }

    public required IReadOnlyList<AddedTokenSpec> AddedTokens { get; init; }

    /// <summary>The tokenizer.json of a model directory (or the file itself); null when there is none.</summary>
    public static string? Find(string pathOrDir)
    {
        string path = Directory.Exists(pathOrDir) ? System.IO.Path.Combine(pathOrDir, FileName) : pathOrDir;
        return File.Exists(path) ? path : null;
    }

    public static TokenizerJson Load(string path)
    {
        using var doc = BoundedJson.Read(path, MaxBytes, "Hugging Face tokenizer.json");
        try
        {
            return Parse(doc.RootElement, path);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{path}: malformed tokenizer.json ({SafeText.Clip(e.Message, 200)})");
        }
    }

    public static TokenizerJson Parse(JsonElement root, string path)
    {
        if (root.ValueKind != JsonValueKind.Object) throw Bad(path, "expected a JSON object");
        var model = root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.Object ? m : throw Bad(path, "no 'model' object");
        string modelType = Str(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "unknown");
        if (modelType != "BPE")
            throw Refuse(path, $"model type {SafeText.Quote(modelType, 60)}", "only byte-level BPE tokenizer.json files (Llama 3, Qwen2) are implemented; Unigram, WordPiece and WordLevel are not");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw Refuse(path, "BPE with byte_fallback (SentencePiece-style)", "ship the model's tokenizer.model beside it; SentencePiece BPE is read from there");
        if (model.TryGetProperty("dropout", out var dr) && dr.ValueKind == JsonValueKind.Number && dr.GetDouble() > 0)
            throw Refuse(path, $"BPE dropout {dr.GetDouble()}", "dropout makes tokenization random; set it to null");
        foreach (var key in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (Str(model, key) is { Length: > 0 } affix) throw Refuse(path, $"BPE {key} {SafeText.Quote(affix, 60)}", "only byte-level BPE without subword affixes is implemented");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        if (!model.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object) throw Bad(path, "model.vocab must be an object of token: id");
        foreach (var p in v.EnumerateObject())
            vocab[p.Name] = p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int id) && id >= 0 && id < ConfigLimits.MaxVocab ? id : throw Bad(path, $"model.vocab[{SafeText.Quote(p.Name, 60)}] must be an integer id in [0, {ConfigLimits.MaxVocab})");

        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var ms) && ms.ValueKind == JsonValueKind.Array)
            foreach (var e in ms.EnumerateArray())
                merges.Add(e.ValueKind switch
                {
                    JsonValueKind.String when e.GetString()!.Split(' ') is [var a, var b] => (a, b),
                    JsonValueKind.Array when e.GetArrayLength() == 2 && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String
                        => (e[0].GetString()!, e[1].GetString()!),
                    _ => throw Bad(path, $"model.merges entry {Clip(e.GetRawText())} is neither \"a b\" nor [\"a\", \"b\"]"),
                });

        bool nfc = ParseNormalizer(root.TryGetProperty("normalizer", out var n) ? n : default, path);
        var (splits, prefixSpace) = ParsePreTokenizer(root.TryGetProperty("pre_tokenizer", out var pt) ? pt : default, path);
        var added = ParseAddedTokens(root, path);
        var (prefix, suffix) = ParsePostProcessor(root.TryGetProperty("post_processor", out var pp) ? pp : default, path, vocab, added);
        var decoder = root.TryGetProperty("decoder", out var d) && d.ValueKind == JsonValueKind.Object ? Str(d, "type") : null;
        if (decoder != "ByteLevel")
            throw Refuse(path, $"decoder '{decoder ?? "none"}'", "a byte-level BPE decodes with the ByteLevel decoder");

        return new TokenizerJson
        {
            Path = path, Vocab = vocab, Merges = merges, Nfc = nfc, SplitPatterns = splits, AddPrefixSpace = prefixSpace,
            IgnoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True,
            PrefixIds = prefix, SuffixIds = suffix, AddedTokens = added,
        };
    }

    static bool ParseNormalizer(JsonElement n, string path)
    {
        if (n.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return false;
        string type = Str(n, "type") ?? "?";
        if (type == "NFC") return true;
        if (type == "Sequence" && n.TryGetProperty("normalizers", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            bool nfc = false;
            foreach (var item in list.EnumerateArray()) nfc |= ParseNormalizer(item, path);
            return nfc;
        }
        throw Refuse(path, $"normalizer {SafeText.Quote(type, 60)}", "only no normalizer or NFC is implemented");
    }

    static (IReadOnlyList<string> Splits, bool AddPrefixSpace) ParsePreTokenizer(JsonElement p, string path)
    {
        if (p.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null)
            throw Refuse(path, "no pre_tokenizer", "a byte-level BPE needs the ByteLevel pre-tokenizer");
        var steps = Str(p, "type") == "Sequence" && p.TryGetProperty("pretokenizers", out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray().ToList() : [p];
        var splits = new List<string>();
        for (int i = 0; i < steps.Count; i++)
        {
            var step = steps[i];
            string type = Str(step, "type") ?? "?";
            if (type == "Split" && i < steps.Count - 1)
            {
                string behavior = Str(step, "behavior") ?? "?";
                if (behavior != "Isolated") throw Refuse(path, $"Split pre-tokenizer behavior {SafeText.Quote(behavior, 60)}", "only Isolated is implemented");
                if (step.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True) throw Refuse(path, "inverted Split pre-tokenizer", "only invert: false is implemented");
                if (!step.TryGetProperty("pattern", out var pat) || pat.ValueKind != JsonValueKind.Object) throw Bad(path, "Split pre-tokenizer without a pattern");
                splits.Add(Str(pat, "Regex") ?? (Str(pat, "String") is { } s ? System.Text.RegularExpressions.Regex.Escape(s) : throw Bad(path, "Split pattern is neither Regex nor String")));
                continue;
            }
            if (type == "ByteLevel" && i == steps.Count - 1)
            {
                bool useRegex = !step.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
                if (useRegex) splits.Add(Gpt2Pattern);
                return (splits, step.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True);
            }
            throw Refuse(path, $"pre_tokenizer {SafeText.Quote(type, 60)}" + (steps.Count > 1 ? $" at step {i + 1} of a Sequence" : ""),
                "only Split (regex, Isolated) steps followed by ByteLevel are implemented");
        }
        throw Refuse(path, "pre_tokenizer without a final ByteLevel step", "a byte-level BPE ends its pre-tokenizer with ByteLevel");
    }

    static List<AddedTokenSpec> ParseAddedTokens(JsonElement root, string path)
    {
        var added = new List<AddedTokenSpec>();
        if (!root.TryGetProperty("added_tokens", out var list) || list.ValueKind != JsonValueKind.Array) return added;
        foreach (var t in list.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("id", out var idEl) || idEl.ValueKind != JsonValueKind.Number || !idEl.TryGetInt32(out int id) || id < 0 || id >= ConfigLimits.MaxVocab || Str(t, "content") is not { Length: > 0 } content)
                throw Bad(path, $"added_tokens entry {Clip(t.GetRawText())} needs an id and a content");
            added.Add(new AddedTokenSpec(id, content, Flag(t, "special"), Flag(t, "lstrip"), Flag(t, "rstrip"), Flag(t, "single_word"), Flag(t, "normalized")));
        }
        return added;
    }

    static (IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix) ParsePostProcessor(JsonElement p, string path,
        Dictionary<string, int> vocab, List<AddedTokenSpec> added)
    {
        if (p.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return ([], []);
        string type = Str(p, "type") ?? "?";
        switch (type)
        {
            case "ByteLevel": return ([], []);
            case "Sequence" when p.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array:
                var prefix = new List<int>();
                var suffix = new List<int>();
                foreach (var item in list.EnumerateArray())
                {
                    var (a, b) = ParsePostProcessor(item, path, vocab, added);
                    prefix.AddRange(a);
                    suffix.AddRange(b);
                }
                return (prefix, suffix);
            case "TemplateProcessing":
                if (!p.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array) throw Bad(path, "TemplateProcessing without 'single'");
                var before = new List<int>();
                var after = new List<int>();
                bool seenSequence = false;
                foreach (var piece in single.EnumerateArray())
                {
                    if (piece.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
                    if (!piece.TryGetProperty("SpecialToken", out var st) || Str(st, "id") is not { } name) throw Bad(path, $"TemplateProcessing piece {Clip(piece.GetRawText())}");
                    (seenSequence ? after : before).AddRange(TemplateIds(p, name, path, vocab, added));
                }
                return (before, after);
            default:
                throw Refuse(path, $"post_processor {SafeText.Quote(type, 60)}", "only none, ByteLevel and TemplateProcessing are implemented");
        }
    }

    static IReadOnlyList<int> TemplateIds(JsonElement template, string name, string path, Dictionary<string, int> vocab, List<AddedTokenSpec> added)
    {
        if (template.TryGetProperty("special_tokens", out var map) && map.TryGetProperty(name, out var entry)
            && entry.TryGetProperty("ids", out var ids) && ids.ValueKind == JsonValueKind.Array)
            return ids.EnumerateArray().Select(i => i.GetInt32()).ToList();
        if (added.FirstOrDefault(a => a.Content == name) is { } t) return [t.Id];
        return vocab.TryGetValue(name, out int id) ? [id] : throw Bad(path, $"TemplateProcessing names {SafeText.Quote(name, 60)}, which is no token");
    }

    static bool Flag(JsonElement o, string key) => o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.True;

    static string? Str(JsonElement o, string key) =>
        o.ValueKind == JsonValueKind.Object && o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static string Clip(string s) => SafeText.Clip(s, 80);   // escaped: a raw entry may span lines

    static InvalidDataException Bad(string path, string what) => new($"{path}: malformed tokenizer.json: {what}");

    static NotSupportedException Refuse(string path, string what, string why) =>
        new($"{path}: {what} is not supported ({why}); QLoraNet refuses rather than tokenize differently from transformers");
}
