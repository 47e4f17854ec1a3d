namespace QLoraNet.Formats;

/// <summary>
/// The special token ids config.json names: <see cref="Bos"/> as config.json gives it (null when it names none; Qwen2
/// families leave it to the tokenizer, which adds no BOS at all), any of <see cref="Eos"/> ends generation (Llama 3
/// lists several), <see cref="Pad"/> is null when the model has none (Llama 2). Whether a sequence starts with a BOS,
/// and which, is the tokenizer's decision (ITextTokenizer.BosId: tokenizer_config.json and the post-processor), not
/// this record's: config.json's bos_token_id of Qwen2.5 is &lt;|endoftext|&gt;, which its tokenizer never prepends.
/// </summary>
public sealed record SpecialTokenIds(int? Bos, IReadOnlyList<int> Eos, int? Pad);
