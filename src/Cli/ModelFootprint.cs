using QLoraNet.Formats;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>Parameter counts of a Llama by part, from config.json alone.</summary>
/// <param name="Embeddings">token embedding (vocab x hidden).</param>
/// <param name="LinearsPerLayer">the seven projections of one decoder layer.</param>
/// <param name="Linears">all decoder projections (layers x <paramref name="LinearsPerLayer"/>).</param>
/// <param name="Norms">two RMSNorm weights per layer plus the final norm.</param>
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
/// What a Llama weighs in each storage format, exactly (<see cref="QuantSizes"/> per matrix, so partial blocks and
/// nested blocks are counted as the modules hold them), without loading a weight. The quantized rows store the
/// decoder projections quantized and the embedding, norms and head in bf16, as the loader keeps them
/// (<see cref="Models.LinearPolicies"/>).
/// </summary>
public static class ModelFootprint
{
    /// <summary>The seven projections of a decoder layer as (name, out, in).</summary>
    public static IReadOnlyList<(string Name, long Rows, long Cols)> LayerLinears(LlamaConfig c)
    {
        long h = c.HiddenSize, inter = c.IntermediateSize, q = (long)c.NumAttentionHeads * c.HeadDim, kv = (long)c.NumKeyValueHeads * c.HeadDim;
        return [("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h), ("o_proj", h, q), ("gate_proj", inter, h), ("up_proj", inter, h), ("down_proj", h, inter)];
    }

    public static ParameterCounts Count(LlamaConfig c)
    {
        long perLayer = LayerLinears(c).Sum(l => l.Rows * l.Cols);
        long embeddings = (long)c.VocabSize * c.HiddenSize;
        return new ParameterCounts(embeddings, perLayer, perLayer * c.NumHiddenLayers,
            (2L * c.NumHiddenLayers + 1) * c.HiddenSize, c.TieWordEmbeddings ? 0 : embeddings);
    }

    /// <summary>Decoder projections in <paramref name="linears"/>, everything else dense in <paramref name="rest"/>.</summary>
    public static FootprintRow Size(LlamaConfig c, string label, QuantSpec linears, ScalarType rest)
    {
        var n = Count(c);
        long restBytes = rest == ScalarType.Float32 ? 4 : 2;
        long linearBytes = LayerLinears(c).Sum(l => QuantSizes.Bytes(linears, l.Rows, l.Cols)) * c.NumHiddenLayers;
        return new FootprintRow(label, linearBytes, (n.Embeddings + n.Head) * restBytes, n.Norms * restBytes);
    }

    /// <summary>fp32, bf16, and int8 / NF4 / NF4 + double quantization with bf16 for the rest.</summary>
    public static IReadOnlyList<FootprintRow> Table(LlamaConfig c) =>
    [
        Size(c, "fp32", new DenseSpec(ScalarType.Float32), ScalarType.Float32),
        Size(c, "bf16", new DenseSpec(ScalarType.BFloat16), ScalarType.BFloat16),
        Size(c, "int8", QuantSpec.Parse("int8"), ScalarType.BFloat16),
        Size(c, "nf4", QuantSpec.Parse("nf4"), ScalarType.BFloat16),
        Size(c, "nf4-dq", QuantSpec.Parse("nf4-dq"), ScalarType.BFloat16),
    ];
}
