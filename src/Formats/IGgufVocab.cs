namespace QLoraNet.Formats;

/// <summary>
/// A tokenizer as llama.cpp's <c>tokenizer.ggml.*</c> keys describe it: SentencePiece (<see cref="GgufLlamaVocab"/>,
/// model "llama") or byte-level BPE from tokenizer.json (<see cref="GgufBpeVocab"/>, model "gpt2").
/// </summary>
public interface IGgufVocab
{
    IEnumerable<KeyValuePair<string, GgufValue>> Metadata();
}
