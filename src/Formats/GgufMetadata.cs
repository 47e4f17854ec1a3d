namespace QLoraNet.Formats;

/// <summary>
/// The metadata of an exported file: general.*, the hyperparameters every decoder architecture of llama.cpp reads
/// under its own prefix (gguf.md "Standardized key-value pairs"; the keys convert_hf_to_gguf.py's TextModel writes:
/// "{arch}.context_length", ...), the architecture's own keys (<see cref="IGgufArchitecture.Metadata"/>) and the
/// tokenizer's (<see cref="IGgufVocab"/>). Integer hyperparameters are UINT32 and the RoPE base and norm epsilon
/// FLOAT32, the types llama.cpp's loader checks.
/// </summary>
public static class GgufMetadata
{
    /// <summary>GGML_QUANT_VERSION: the Q4_0/Q8_0 block layouts written here are those of version 2.</summary>
    public const uint QuantizationVersion = 2;

    public static IReadOnlyList<KeyValuePair<string, GgufValue>> Build(ModelArchitecture c, IGgufArchitecture architecture, IGgufVocab vocab, string name, GgufExportType type)
    {
        var kv = new List<KeyValuePair<string, GgufValue>>();
        string a = architecture.Name;
        void Add(string key, GgufValue v) => kv.Add(new(key, v));

        Add("general.architecture", GgufValue.String(a));
        Add("general.type", GgufValue.String("model"));
        Add("general.name", GgufValue.String(name));
        Add("general.file_type", GgufValue.UInt32(GgufTypePolicy.FileType(type)));
        Add("general.quantization_version", GgufValue.UInt32(QuantizationVersion));
        Add(GgufWriter.AlignmentKey, GgufValue.UInt32(GgufWriter.DefaultAlignment));

        Add($"{a}.vocab_size", GgufValue.UInt32((uint)c.VocabSize));
        Add($"{a}.context_length", GgufValue.UInt32((uint)c.MaxPositions));
        Add($"{a}.embedding_length", GgufValue.UInt32((uint)c.Hidden));
        Add($"{a}.block_count", GgufValue.UInt32((uint)c.NumLayers));
        Add($"{a}.feed_forward_length", GgufValue.UInt32((uint)c.Intermediate));
        Add($"{a}.attention.head_count", GgufValue.UInt32((uint)c.NumHeads));
        Add($"{a}.attention.head_count_kv", GgufValue.UInt32((uint)c.NumKvHeads));
        Add($"{a}.rope.freq_base", GgufValue.Float32((float)c.Rope.Theta));
        Add($"{a}.attention.layer_norm_rms_epsilon", GgufValue.Float32((float)c.NormEps));
        Add($"{a}.rope.dimension_count", GgufValue.UInt32((uint)c.Rope.RotaryDim));
        if (c.HeadDim * c.NumHeads != c.Hidden)
        {
            // llama.cpp assumes head dim = embedding_length / head_count unless told otherwise (Gemma's is independent).
            Add($"{a}.attention.key_length", GgufValue.UInt32((uint)c.HeadDim));
            Add($"{a}.attention.value_length", GgufValue.UInt32((uint)c.HeadDim));
        }
        foreach (var pair in architecture.Metadata(c)) kv.Add(pair);
        foreach (var pair in vocab.Metadata()) kv.Add(pair);
        return kv;
    }
}
