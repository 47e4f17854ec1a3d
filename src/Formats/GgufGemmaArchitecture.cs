using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// llama.cpp's <c>gemma</c> architecture (conversion/gemma.py GemmaModel; src/models/gemma.cpp): NEOX RoPE (q and k
/// unpermuted), GeGLU, head_dim as attention.key_length / value_length, the head always tied to
/// <c>token_embd.weight</c> (a stored lm_head is skipped, as the converter does). Gemma's RMSNorm scales by (1 + w)
/// while llama.cpp's multiplies by the stored weight, so every norm is written as w + 1, in f32. llama.cpp scales the
/// embeddings by sqrt(embedding_length) itself (in f32; transformers rounds sqrt(hidden) to the compute dtype, the
/// same value in fp32). SentencePiece without the dummy-prefix space (tokenizer.ggml.add_space_prefix false).
/// </summary>
public sealed class GgufGemmaArchitecture : IGgufArchitecture
{
    public string Name => "gemma";

    public IReadOnlyList<string> Check(ModelArchitecture arch)
    {
        if (GgufArchitectureChecks.SingleWindow(arch) is int w)
            throw new NotSupportedException($"llama.cpp's gemma architecture has no sliding-window attention; this config uses a window of {w}");
        GgufArchitectureChecks.RefuseCapsAndScale(arch, Name);
        return CheckGemma(arch, Name);
    }

    internal static IReadOnlyList<string> CheckGemma(ModelArchitecture arch, string name)
    {
        if (arch.Rope.Scaling != RopeScalingKind.None)
            throw new NotSupportedException($"GGUF export of RoPE scaling '{arch.Rope.Scaling}' for {name} is not written");
        GgufArchitectureChecks.RefuseBiases(arch, name);
        return [];
    }

    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata(ModelArchitecture arch)
    {
        yield return new("tokenizer.ggml.add_space_prefix", GgufValue.Bool(false));
    }

    public bool Loads(string hfName, ModelArchitecture arch) => hfName != arch.HeadWeight;

    public Tensor Convert(string ggufName, Tensor weight, ModelArchitecture arch) => NormPlusOne(ggufName, weight);

    /// <summary>(1 + w) RMSNorm weights as llama.cpp multiplies them (conversion/gemma.py: data_torch + 1).</summary>
    internal static Tensor NormPlusOne(string ggufName, Tensor weight) =>
        ggufName.EndsWith("_norm.weight", StringComparison.Ordinal) ? weight.to(ScalarType.Float32) + 1 : weight;
}
