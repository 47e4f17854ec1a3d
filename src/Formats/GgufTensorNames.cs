namespace QLoraNet.Formats;

/// <summary>
/// Hugging Face tensor names to the names llama.cpp's decoder architectures load (<c>llama</c>, <c>qwen2</c>,
/// <c>gemma</c>, <c>gemma2</c> share them; gguf-py constants.py MODEL_TENSOR / tensor_mapping.py; llama-arch.cpp
/// LLM_TENSOR_NAMES), derived from the
/// <see cref="ModelArchitecture"/>: each decoder-layer linear and norm maps by its role, so the Hugging Face side
/// of the table is the family record's and is written nowhere else.
/// </summary>
public sealed class GgufTensorNames
{
    public const string TokenEmbedding = "token_embd.weight";
    public const string OutputNorm = "output_norm.weight";
    public const string Output = "output.weight";

    readonly Dictionary<string, string> _byHfName = new(StringComparer.Ordinal);
    readonly List<string> _required = [];

    public GgufTensorNames(ModelArchitecture arch)
    {
        Add(arch.EmbeddingWeight, TokenEmbedding, required: true);
        Add(arch.FinalNormWeight, OutputNorm, required: true);
        Add(arch.HeadWeight, Output, required: false);  // absent when the head is tied to the embedding
        for (int i = 0; i < arch.NumLayers; i++)
        {
            string hf = arch.LayerPrefix(i), gguf = $"blk.{i}.";
            foreach (var l in arch.LayerLinears)
            {
                Add(hf + l.Path + ".weight", gguf + LinearName(l.Role) + ".weight", required: true);
                if (l.HasBias) Add(hf + l.Path + ".bias", gguf + LinearName(l.Role) + ".bias", required: true);
            }
            foreach (var n in arch.LayerNorms) Add(hf + n.Path + ".weight", gguf + NormName(n.Role) + ".weight", required: true);
        }
    }

    /// <summary>GGUF names every complete checkpoint provides (the head, which may be tied, excepted).</summary>
    public IReadOnlyList<string> Required => _required;

    /// <summary>
    /// The GGUF name of <paramref name="hfName"/>; null for tensors llama.cpp recomputes and does not load
    /// (<c>rotary_emb.inv_freq</c> buffers of old checkpoints). Any other unknown name is an error rather than a
    /// silently dropped weight.
    /// </summary>
    public string? Map(string hfName)
    {
        if (hfName.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) return null;
        return _byHfName.TryGetValue(hfName, out var name) ? name
            : throw new NotSupportedException($"tensor {SafeText.Quote(hfName)} has no llama.cpp counterpart (extra modules are not supported)");
    }

    /// <summary>True for "blk.N.{linear}.weight" and "blk.N.{linear}.bias", e.g. linear "attn_q".</summary>
    public static bool IsLinear(string ggufName, string linear) =>
        ggufName.StartsWith("blk.", StringComparison.Ordinal)
        && (ggufName.EndsWith($".{linear}.weight", StringComparison.Ordinal) || ggufName.EndsWith($".{linear}.bias", StringComparison.Ordinal));

    void Add(string hf, string gguf, bool required)
    {
        _byHfName[hf] = gguf;
        if (required) _required.Add(gguf);
    }

    static string LinearName(LinearRole role) => role switch
    {
        LinearRole.Query => "attn_q",
        LinearRole.Key => "attn_k",
        LinearRole.Value => "attn_v",
        LinearRole.Output => "attn_output",
        LinearRole.Gate => "ffn_gate",
        LinearRole.Up => "ffn_up",
        LinearRole.Down => "ffn_down",
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, null),
    };

    static string NormName(NormRole role) => role switch
    {
        NormRole.PreAttention => "attn_norm",
        NormRole.PostAttention => "post_attention_norm",
        NormRole.PreMlp => "ffn_norm",
        NormRole.PostMlp => "post_ffw_norm",
        NormRole.AttentionSub => "attn_sub_norm",
        NormRole.MlpSub => "ffn_sub_norm",
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, null),
    };
}
