using System.Text;
using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// What QLoraNet reads from a Hugging Face <c>tokenizer_config.json</c> (and <c>chat_template.jinja</c> beside it):
/// the tokenizer class (which decides how transformers builds the tokenizer from tokenizer.model), the BOS/EOS flags,
/// the special-token strings, the added tokens, the SentencePiece prefix flags (<c>legacy</c>, <c>add_prefix_space</c>)
/// and the chat template. Token strings may be written as a string or as an AddedToken object
/// (<c>{"content": ...}</c>). A missing file gives <see cref="Empty"/> (every field absent).
/// </summary>
public sealed record TokenizerConfigJson
{
    public const string FileName = "tokenizer_config.json";
    public const string ChatTemplateFileName = "chat_template.jinja";
    const long MaxBytes = 64L << 20;
    const long MaxTemplateBytes = 1L << 20;

    public static TokenizerConfigJson Empty { get; } = new();

    public string? TokenizerClass { get; init; }
    public bool? AddBosToken { get; init; }
    public bool? AddEosToken { get; init; }
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? UnkToken { get; init; }
    public string? PadToken { get; init; }
    public string? MaskToken { get; init; }
    public IReadOnlyList<string> AdditionalSpecialTokens { get; init; } = [];

    /// <summary>added_tokens_decoder, by id.</summary>
    public IReadOnlyList<AddedTokenSpec> AddedTokens { get; init; } = [];

    public bool? Legacy { get; init; }
    public bool? AddPrefixSpace { get; init; }

    /// <summary>The Jinja chat template the checkpoint ships (its "default" one when it names several); null when none.</summary>
    public string? ChatTemplate { get; init; }

    /// <summary>Where <see cref="ChatTemplate"/> came from, for messages.</summary>
    public string? ChatTemplateSource { get; init; }

    /// <summary>The tokenizer class without the "Fast" suffix transformers 4 used for the Rust-backed variant.</summary>
    public string? TokenizerClassBase => TokenizerClass is { } c && c.EndsWith("Fast", StringComparison.Ordinal) && c != "PreTrainedTokenizerFast" ? c[..^4] : TokenizerClass;

    /// <summary>Every token string the config names as special (bos, eos, unk, pad, mask, additional).</summary>
    public IEnumerable<string> NamedSpecialTokens =>
        new[] { BosToken, EosToken, UnkToken, PadToken, MaskToken }.OfType<string>().Concat(AdditionalSpecialTokens).Distinct();

    public static TokenizerConfigJson Load(string modelDir)
    {
        string path = Path.Combine(modelDir, FileName);
        var config = File.Exists(path) ? Parse(path) : Empty;
        string jinja = Path.Combine(modelDir, ChatTemplateFileName);
        if (File.Exists(jinja))
            config = config with { ChatTemplate = Encoding.UTF8.GetString(BoundedJson.ReadBytes(jinja, MaxTemplateBytes, "chat template")), ChatTemplateSource = jinja };
        return config;
    }

    static TokenizerConfigJson Parse(string path)
    {
        using var doc = BoundedJson.Read(path, MaxBytes, "tokenizer_config.json");
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: expected a JSON object");
        string? template = null;
        if (r.TryGetProperty("chat_template", out var ct))
            template = ct.ValueKind switch
            {
                JsonValueKind.String => ct.GetString(),
                JsonValueKind.Array => ct.EnumerateArray().Where(t => t.ValueKind == JsonValueKind.Object && Str(t, "name") == "default")
                    .Select(t => Str(t, "template")).FirstOrDefault(),
                _ => null,
            };
        return new TokenizerConfigJson
        {
            TokenizerClass = Str(r, "tokenizer_class"),
            AddBosToken = Bool(r, "add_bos_token", path),
            AddEosToken = Bool(r, "add_eos_token", path),
            BosToken = Token(r, "bos_token"),
            EosToken = Token(r, "eos_token"),
            UnkToken = Token(r, "unk_token"),
            PadToken = Token(r, "pad_token"),
            MaskToken = Token(r, "mask_token"),
            AdditionalSpecialTokens = TokenList(r, "additional_special_tokens").Concat(TokenList(r, "extra_special_tokens")).ToList(),
            AddedTokens = AddedTokensDecoder(r, path),
            Legacy = Bool(r, "legacy", path),
            AddPrefixSpace = Bool(r, "add_prefix_space", path),
            ChatTemplate = template,
            ChatTemplateSource = template != null ? $"{path} (chat_template)" : null,
        };
    }

    static IReadOnlyList<AddedTokenSpec> AddedTokensDecoder(JsonElement r, string path)
    {
        if (!r.TryGetProperty("added_tokens_decoder", out var d) || d.ValueKind != JsonValueKind.Object) return [];
        var list = new List<AddedTokenSpec>();
        foreach (var p in d.EnumerateObject())
        {
            if (!int.TryParse(p.Name, out int id) || id < 0 || id >= ConfigLimits.MaxVocab || Str(p.Value, "content") is not { Length: > 0 } content)
                throw new InvalidDataException($"{path}: added_tokens_decoder entry {SafeText.Quote(p.Name, 60)} needs an integer id and a content");
            list.Add(new AddedTokenSpec(id, content, Flag(p.Value, "special"), Flag(p.Value, "lstrip"), Flag(p.Value, "rstrip"),
                Flag(p.Value, "single_word"), Flag(p.Value, "normalized")));
        }
        return list;
    }

    /// <summary>A token written as "text" or as {"content": "text", ...}.</summary>
    static string? Token(JsonElement r, string key) =>
        r.TryGetProperty(key, out var v) ? TokenText(v) : null;

    static string? TokenText(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object => Str(v, "content"),
        _ => null,
    };

    static IEnumerable<string> TokenList(JsonElement r, string key) =>
        r.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(TokenText).OfType<string>() : [];

    static bool? Bool(JsonElement r, string key, string path) =>
        !r.TryGetProperty(key, out var v) ? null : v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Null => null,
            _ => throw new InvalidDataException($"{path}: {key} must be true or false, got {v.GetRawText()}"),
        };

    static bool Flag(JsonElement o, string key) => o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.True;

    static string? Str(JsonElement o, string key) =>
        o.ValueKind == JsonValueKind.Object && o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
