using QLoraNet.Formats;

namespace QLoraNet.Models;

/// <summary>
/// Picks the tokenizer of a model directory as transformers 5.17 would build it, by tokenizer_config.json's
/// <c>tokenizer_class</c> and the files present:
/// <list type="bullet">
/// <item>LlamaTokenizer / GemmaTokenizer (Llama 2, Mistral, Gemma), or no class, with a tokenizer.model:
/// <see cref="SentencePieceTextTokenizer"/>;</item>
/// <item>PreTrainedTokenizerFast (Llama 3) or no class, with a tokenizer.json: <see cref="ByteLevelBpeTextTokenizer"/>
/// over the file as it is;</item>
/// <item>Qwen2Tokenizer: the same, but with the pipeline Qwen2Tokenizer builds in code (NFC, its Split regex,
/// ByteLevel without prefix space, merges not ignored, no post-processor), taking only the vocabulary, merges and
/// added tokens from tokenizer.json.</item>
/// </list>
/// Any other class is refused by name.
/// </summary>
public static class TextTokenizers
{
    /// <summary>Qwen2Tokenizer's pre-tokenizer regex (transformers models/qwen2/tokenization_qwen2.py): single digits.</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    static readonly string[] FileClasses = ["PreTrainedTokenizerFast", "TokenizersBackend", "Qwen2Tokenizer"];
    static readonly string[] SentencePieceClasses = ["LlamaTokenizer", "GemmaTokenizer"];

    public static ITextTokenizer Load(string modelDir)
    {
        var config = TokenizerConfigJson.Load(modelDir);
        string? cls = config.TokenizerClassBase;
        bool hasModel = SentencePieceModel.Find(modelDir) != null, hasJson = TokenizerJson.Find(modelDir) != null;
        if (cls != null && !FileClasses.Contains(cls) && !SentencePieceClasses.Contains(cls))
            throw new NotSupportedException($"{Path.Combine(modelDir, TokenizerConfigJson.FileName)}: tokenizer_class {QLoraNet.Formats.SafeText.Quote(config.TokenizerClass)} is not supported (implemented: {string.Join(", ", SentencePieceClasses.Concat(FileClasses))})");
        if (hasModel && (cls == null || SentencePieceClasses.Contains(cls) || !hasJson))
            return SentencePieceTextTokenizer.Load(modelDir, config);
        if (hasJson)
        {
            if (cls != null && SentencePieceClasses.Contains(cls))
                throw new NotSupportedException($"{modelDir}: tokenizer_class {QLoraNet.Formats.SafeText.Quote(config.TokenizerClass)} builds its tokenizer from tokenizer.model, which the directory lacks; add the model's tokenizer.model");
            var spec = TokenizerJson.Load(TokenizerJson.Find(modelDir)!);
            if (cls == "Qwen2Tokenizer")
                spec = spec with { Nfc = true, SplitPatterns = [Qwen2Pattern], AddPrefixSpace = false, IgnoreMerges = false, PrefixIds = [], SuffixIds = [] };
            return ByteLevelBpeTextTokenizer.Create(spec, config, modelDir);
        }
        throw new FileNotFoundException($"{Path.Combine(modelDir, SentencePieceModel.FileName)} (or {TokenizerJson.FileName}) not found: the model directory needs its tokenizer", Path.Combine(modelDir, SentencePieceModel.FileName));
    }
}
