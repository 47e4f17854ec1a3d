namespace QLoraNet.Formats;

/// <summary>
/// Gemma (Gemma Team 2024, arXiv:2403.08295; transformers' GemmaConfig): GeGLU with the tanh approximation of GELU,
/// RMSNorm scaling by (1 + w) in fp32, embeddings multiplied by sqrt(hidden) in the compute dtype, head_dim
/// independent of hidden / heads (Gemma-7B: 16 x 256 = 4096 against hidden 3072; absent means 256, the config
/// class's default), multi-query attention in the 2B, tied head. The activation: transformers 5.17 writes
/// hidden_act ("gelu_pytorch_tanh"); hub files of 2024 carry hidden_act "gelu" with hidden_activation
/// "gelu_pytorch_tanh", which GemmaConfig documents as overriding it, so hidden_activation wins when set. Exact GELU
/// (hidden_act "gelu" alone, whose meaning changed across transformers releases) is refused by name.
/// use_bidirectional_attention (Gemma-based embedding models) is refused.
/// </summary>
public sealed class GemmaFamily : IModelFamily
{
    /// <summary>GemmaConfig's head_dim default.</summary>
    public const int DefaultHeadDim = 256;

    public string Name => "gemma";
    public IReadOnlyList<string> ModelTypes { get; } = ["gemma"];
    public IReadOnlyList<string> Architectures { get; } = ["GemmaForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c) => ParseCommon(c, Name, "Gemma");

    /// <summary>The fields Gemma and Gemma 2 read alike; Gemma 2 adds its own with <c>with</c>.</summary>
    internal static ModelArchitecture ParseCommon(HfConfigJson c, string family, string displayName)
    {
        DecoderConfigFields.RefuseIfTrue(c, "use_bidirectional_attention", "bidirectional attention");
        var shape = DecoderConfigFields.Attention(c, defaultHeadDim: DefaultHeadDim);
        int intermediate = DecoderConfigFields.Intermediate(c);
        bool attentionBias = c.Bool("attention_bias") ?? false;
        return new ModelArchitecture
        {
            Family = family,
            ModelType = c.String("model_type") ?? family,
            Architectures = c.Strings("architectures"),
            NumLayers = DecoderConfigFields.Layers(c),
            Hidden = shape.Hidden,
            Intermediate = intermediate,
            NumHeads = shape.Heads,
            NumKvHeads = shape.KvHeads,
            HeadDim = shape.HeadDim,
            VocabSize = DecoderConfigFields.Vocab(c),
            MaxPositions = c.Int("max_position_embeddings") ?? 8192,
            Norm = NormKind.RmsOffsetOne,
            NormEps = c.Positive("rms_norm_eps") ?? 1e-6,
            Activation = DecoderConfigFields.ActivationOf(c, displayName, "gelu_pytorch_tanh", "hidden_activation", "hidden_act"),
            TiedHead = c.Bool("tie_word_embeddings") ?? true,
            Rope = RopeConfig.Read(c, shape.HeadDim),
            Tokens = DecoderConfigFields.Tokens(c, bos: 2, eos: 1, pad: 0),
            TorchDtype = DecoderConfigFields.TorchDtype(c),
            LayerLinears = DecoderConfigFields.Linears(shape, intermediate, attentionBias, attentionBias, mlpBias: false),
            LayerNorms = DecoderConfigFields.PreNorms,
            ScaleEmbeddings = true,
        };
    }
}
