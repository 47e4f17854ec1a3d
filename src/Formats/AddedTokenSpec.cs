namespace QLoraNet.Formats;

/// <summary>
/// A token matched in the text before any normalization or pre-tokenization (Hugging Face tokenizers' AddedToken,
/// as tokenizer.json's <c>added_tokens</c> and tokenizer_config.json's <c>added_tokens_decoder</c> write it).
/// <see cref="Special"/> tokens are dropped by decoding with skip_special_tokens; both kinds are matched in text.
/// <see cref="LStrip"/>/<see cref="RStrip"/> make a match swallow the whitespace to its left/right,
/// <see cref="SingleWord"/> matches only where no word character touches it, and <see cref="Normalized"/> tokens are
/// matched in the normalized text instead of the raw one.
/// </summary>
public sealed record AddedTokenSpec(int Id, string Content, bool Special, bool LStrip = false, bool RStrip = false,
    bool SingleWord = false, bool Normalized = false);
