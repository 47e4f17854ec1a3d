namespace QLoraNet.Formats;

/// <summary>
/// The metadata llama.cpp's <c>llama</c> architecture reads (gguf.md "Standardized key-value pairs"; the keys
/// convert_hf_to_gguf.py writes for LlamaForCausalLM). Integer hyperparameters are UINT32 and the RoPE base and
/// norm epsilon FLOAT32, the types llama.cpp's loader checks.
/// </summary>
public static class GgufLlamaMetadata
{
    /// <summary>GGML_QUANT_VERSION: the Q4_0/Q8_0 block layouts written here are those of version 2.</summary>
    public const uint QuantizationVersion = 2;

    public static IReadOnlyList<KeyValuePair<string, GgufValue>> Build(ModelArchitecture c, GgufLlamaVocab vocab, string name, GgufExportType type)
    {
        var kv = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue v) => kv.Add(new(key, v));

        Add("general.architecture", GgufValue.String("llama"));
        Add("general.type", GgufValue.String("model"));
        Add("general.name", GgufValue.String(name));
        Add("general.file_type", GgufValue.UInt32(GgufTypePolicy.FileType(type)));
        Add("general.quantization_version", GgufValue.UInt32(QuantizationVersion));
        Add(GgufWriter.AlignmentKey, GgufValue.UInt32(GgufWriter.DefaultAlignment));

        Add("llama.vocab_size", GgufValue.UInt32((uint)c.VocabSize));
        Add("llama.context_length", GgufValue.UInt32((uint)c.MaxPositions));
        Add("llama.embedding_length", GgufValue.UInt32((uint)c.Hidden));
        Add("llama.block_count", GgufValue.UInt32((uint)c.NumLayers));
        Add("llama.feed_forward_length", GgufValue.UInt32((uint)c.Intermediate));
        Add("llama.attention.head_count", GgufValue.UInt32((uint)c.NumHeads));
        Add("llama.attention.head_count_kv", GgufValue.UInt32((uint)c.NumKvHeads));
        Add("llama.rope.freq_base", GgufValue.Float32((float)c.Rope.Theta));
        Add("llama.attention.layer_norm_rms_epsilon", GgufValue.Float32((float)c.NormEps));
        Add("llama.rope.dimension_count", GgufValue.UInt32((uint)c.Rope.RotaryDim));
        if (c.HeadDim * c.NumHeads != c.Hidden)
        {
            // llama.cpp assumes head dim = embedding_length / head_count unless told otherwise.
            Add("llama.attention.key_length", GgufValue.UInt32((uint)c.HeadDim));
            Add("llama.attention.value_length", GgufValue.UInt32((uint)c.HeadDim));
        }

        Add("tokenizer.ggml.model", GgufValue.String("llama"));      // SentencePiece (SPM) tokenization
        Add("tokenizer.ggml.pre", GgufValue.String("default"));
        Add("tokenizer.ggml.tokens", GgufValue.StringArray(vocab.Tokens));
        Add("tokenizer.ggml.scores", GgufValue.Float32Array(vocab.Scores));
        Add("tokenizer.ggml.token_type", GgufValue.Int32Array(vocab.TokenTypes));
        if (vocab.BosId is int bos) Add("tokenizer.ggml.bos_token_id", GgufValue.UInt32((uint)bos));
        if (vocab.EosId is int eos) Add("tokenizer.ggml.eos_token_id", GgufValue.UInt32((uint)eos));
        if (vocab.UnkId is int unk) Add("tokenizer.ggml.unknown_token_id", GgufValue.UInt32((uint)unk));
        if (vocab.PadId is int pad) Add("tokenizer.ggml.padding_token_id", GgufValue.UInt32((uint)pad));
        if (vocab.AddBos is bool addBos) Add("tokenizer.ggml.add_bos_token", GgufValue.Bool(addBos));
        if (vocab.AddEos is bool addEos) Add("tokenizer.ggml.add_eos_token", GgufValue.Bool(addEos));
        return kv;
    }
}
