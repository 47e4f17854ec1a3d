namespace QLoraNet.Formats;

/// <summary>
/// Sanity limits for the sizes a model's <c>config.json</c> declares, checked before any tensor is built from them:
/// a corrupt or hostile config (<c>num_hidden_layers: 2147483647</c>) would otherwise allocate without bound, and
/// sizes that disagree with each other would fail deep inside a matmul. Each limit is far above any released model
/// (the largest Llama, 405B: hidden 16384, intermediate 53248, 126 layers, 128 heads, vocab 128256) and far below
/// what overflows the products the loader computes; all products here use checked 64-bit arithmetic.
/// </summary>
public static class ConfigLimits
{
    public const long MaxVocab = 1L << 24;
    public const long MaxHidden = 1L << 16;
    public const long MaxIntermediate = 1L << 20;
    public const long MaxLayers = 1024;
    public const long MaxHeads = 1024;
    public const long MaxHeadDim = 1024;
    public const long MaxPositions = 1L << 24;

    /// <summary>At most this many parameters in all (about 4 trillion): more is not a model this loader can hold.</summary>
    public const long MaxParameters = 1L << 42;

    /// <summary>
    /// Refuses, with one line naming <paramref name="path"/> and the field, any size out of its range or
    /// inconsistent with the others. <paramref name="headDim"/> is config.json's <c>head_dim</c> when it has one
    /// (otherwise hidden_size / num_attention_heads is used, as transformers does).
    /// </summary>
    public static void Check(string path, long vocabSize, long hiddenSize, long intermediateSize, long numHiddenLayers,
        long numAttentionHeads, long numKeyValueHeads, long? headDim, long maxPositionEmbeddings)
    {
        Range(path, "vocab_size", vocabSize, MaxVocab);
        Range(path, "hidden_size", hiddenSize, MaxHidden);
        Range(path, "intermediate_size", intermediateSize, MaxIntermediate);
        Range(path, "num_hidden_layers", numHiddenLayers, MaxLayers);
        Range(path, "num_attention_heads", numAttentionHeads, MaxHeads);
        Range(path, "num_key_value_heads", numKeyValueHeads, MaxHeads);
        Range(path, "max_position_embeddings", maxPositionEmbeddings, MaxPositions);
        if (numAttentionHeads % numKeyValueHeads != 0)
            throw Bad(path, $"num_attention_heads {numAttentionHeads} is not a multiple of num_key_value_heads {numKeyValueHeads} (grouped-query attention shares each key/value head among a whole number of query heads)");
        long dim = headDim ?? hiddenSize / numAttentionHeads;
        if (headDim is null && dim == 0)
            throw Bad(path, $"hidden_size {hiddenSize} is smaller than num_attention_heads {numAttentionHeads}, so a head would have no dimensions");
        Range(path, "head_dim", dim, MaxHeadDim);
        if (dim % 2 != 0)
            throw Bad(path, $"head_dim {dim} is odd; rotary position embedding rotates pairs of dimensions");

        long parameters;
        try
        {
            checked
            {
                long attention = hiddenSize * numAttentionHeads * dim * 2 + hiddenSize * numKeyValueHeads * dim * 2;
                long mlp = 3 * hiddenSize * intermediateSize;
                parameters = 2 * vocabSize * hiddenSize + numHiddenLayers * (attention + mlp + 2 * hiddenSize) + hiddenSize;
            }
        }
        catch (OverflowException)
        {
            parameters = long.MaxValue;
        }
        if (parameters > MaxParameters)
            throw Bad(path, $"the sizes describe a model of about {parameters:E2} parameters, more than the {MaxParameters:E2} limit; check vocab_size, hidden_size, intermediate_size and num_hidden_layers");
    }

    static readonly Dictionary<string, long> Maxima = new()
    {
        ["vocab_size"] = MaxVocab, ["hidden_size"] = MaxHidden, ["intermediate_size"] = MaxIntermediate,
        ["num_hidden_layers"] = MaxLayers, ["num_attention_heads"] = MaxHeads, ["num_key_value_heads"] = MaxHeads,
        ["head_dim"] = MaxHeadDim, ["max_position_embeddings"] = MaxPositions,
    };

    /// <summary>One size field as a family parser reads it: in [1, its limit] or one line naming it; its value returned.</summary>
    public static int Field(string path, string field, int value)
    {
        Range(path, field, value, Maxima.GetValueOrDefault(field, int.MaxValue));
        return value;
    }

    static void Range(string path, string field, long value, long max)
    {
        if (value < 1 || value > max)
            throw Bad(path, $"{field} {value} is out of range (1 to {max}); the file is corrupt or not a supported model config");
    }

    static InvalidDataException Bad(string path, string what) => new($"{path}: {what}");
}
