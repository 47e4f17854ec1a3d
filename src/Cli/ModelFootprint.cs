using QLoraNet.Formats;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>Parameter counts of a model by part, from its family record (config.json alone).</summary>
/// <param name="Embeddings">token embedding (vocab x hidden).</param>
/// <param name="LinearsPerLayer">the linears (and their biases) of one decoder layer.</param>
/// <param name="Linears">all decoder linears (layers x <paramref name="LinearsPerLayer"/>).</param>
/// <param name="Norms">the norm weights of every layer plus the final norm.</param>
/// <param name="Head">output head (vocab x hidden); 0 when tied to the embedding.</param>
public sealed record ParameterCounts(long Embeddings, long LinearsPerLayer, long Linears, long Norms, long Head)
{
    public long Total => Embeddings + Linears + Norms + Head;
}

/// <summary>Bytes of one way of storing the model, by part.</summary>
public sealed record FootprintRow(string Format, long Linears, long EmbeddingsAndHead, long Norms)
{
    public long Total => Linears + EmbeddingsAndHead + Norms;
}

/// <summary>
/// What a model weighs in each storage format, exactly (<see cref="BaseFormat.StorageBytes"/> per matrix, so partial
/// blocks and nested blocks are counted as the modules hold them), without loading a weight. The quantized rows store
/// the decoder linears quantized and the embedding, norms, biases and head in bf16, as the loader keeps them
/// (<see cref="Models.LinearPolicies"/>). Which linears there are, and their shapes, is the family record's.
/// </summary>
public static class ModelFootprint
{
    public static ParameterCounts Count(ModelArchitecture a)
    {
        long embeddings = (long)a.VocabSize * a.Hidden;
        return new ParameterCounts(embeddings, a.LayerLinearParameters, a.LayerLinearParameters * a.NumLayers,
            a.LayerNormParameters * a.NumLayers + a.Hidden, a.TiedHead ? 0 : embeddings);
    }

    /// <summary>Decoder linears in <paramref name="linears"/>, everything else dense in <paramref name="rest"/>.</summary>
    public static FootprintRow Size(ModelArchitecture a, string label, BaseFormat linears, ScalarType rest)
    {
        var n = Count(a);
        long restBytes = rest == ScalarType.Float32 ? 4 : 2;
        long weights = a.LayerLinears.Sum(l => linears.StorageBytes(l.OutFeatures, l.InFeatures)) * a.NumLayers;
        long biases = a.LayerLinears.Where(l => l.HasBias).Sum(l => l.OutFeatures) * a.NumLayers * restBytes;
        return new FootprintRow(label, weights + biases, (n.Embeddings + n.Head) * restBytes, n.Norms * restBytes);
    }

    /// <summary>fp32, bf16, and int8 / NF4 / NF4 + double quantization / LLM.int8() / HQQ 4, 3, 2 bits / ternary / GGUF q8_0, q4_0
    /// (rows that are not whole blocks in fp16, as export writes them) with bf16 for the rest.</summary>
    public static IReadOnlyList<FootprintRow> Table(ModelArchitecture a) =>
    [
        Size(a, "fp32", BaseFormat.Parse("fp32"), ScalarType.Float32),
        Size(a, "bf16", BaseFormat.Parse("bf16"), ScalarType.BFloat16),
        Size(a, "int8", BaseFormat.Parse("int8"), ScalarType.BFloat16),
        Size(a, "nf4", BaseFormat.Parse("nf4"), ScalarType.BFloat16),
        Size(a, "nf4-dq", BaseFormat.Parse("nf4-dq"), ScalarType.BFloat16),
        Size(a, "llm-int8", BaseFormat.Parse("llm-int8"), ScalarType.BFloat16),
        Size(a, "hqq4", BaseFormat.Parse("hqq4"), ScalarType.BFloat16),
        Size(a, "hqq3", BaseFormat.Parse("hqq3"), ScalarType.BFloat16),
        Size(a, "hqq2", BaseFormat.Parse("hqq2"), ScalarType.BFloat16),
        Size(a, "ternary", BaseFormat.Parse("ternary"), ScalarType.BFloat16),
        Size(a, "q8_0", BaseFormat.Parse("q8_0-f16"), ScalarType.BFloat16),
        Size(a, "q4_0", BaseFormat.Parse("q4_0-f16"), ScalarType.BFloat16),
    ];
}
