namespace QLoraNet.Formats;

/// <summary>
/// Llama (Touvron et al. 2023; transformers' LlamaConfig): RMSNorm before attention and before the MLP, SwiGLU,
/// RoPE, grouped-query attention, optional biases (attention_bias on q/k/v/o, mlp_bias on gate/up/down), tied or
/// untied head. RoPE: Llama-2 checkpoints write rope_theta at the top level (absent means 10000); transformers 5
/// writes rope_parameters {rope_theta, rope_type}. Only unscaled RoPE exists here: any other rope_type (Llama 3's
/// "llama3", "linear", "yarn", ...) is refused by name rather than silently computed wrong.
/// </summary>
public sealed class LlamaFamily : IModelFamily
{
    public string Name => "llama";
    public IReadOnlyList<string> ModelTypes { get; } = ["llama"];
    public IReadOnlyList<string> Architectures { get; } = ["LlamaForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c)
    {
        int hidden = c.RequiredInt("hidden_size");
        int heads = c.RequiredInt("num_attention_heads");
        int kvHeads = c.Int("num_key_value_heads") ?? heads;
        int intermediate = c.RequiredInt("intermediate_size");
        int layers = c.RequiredInt("num_hidden_layers"), vocab = c.RequiredInt("vocab_size");
        int maxPositions = c.Int("max_position_embeddings") ?? 2048;
        // Sizes in range and consistent with each other before anything is derived from them (issue 11).
        ConfigLimits.Check(c.Path, vocab, hidden, intermediate, layers, heads, kvHeads, c.Int("head_dim"), maxPositions);
        int headDim = c.Int("head_dim") ?? hidden / heads;
        string act = c.String("hidden_act") ?? "silu";
        if (act != "silu") throw new NotSupportedException($"{c.Path}: hidden_act {SafeText.Quote(act)} is not supported (Llama uses silu)");
        bool attentionBias = c.Bool("attention_bias") ?? false, mlpBias = c.Bool("mlp_bias") ?? false;

        long q = (long)heads * headDim, kv = (long)kvHeads * headDim;
        var eos = c.TokenIds("eos_token_id", vocab);
        return new ModelArchitecture
        {
            Family = Name,
            ModelType = c.String("model_type") ?? "llama",
            Architectures = c.Strings("architectures"),
            NumLayers = layers,
            Hidden = hidden,
            Intermediate = intermediate,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = vocab,
            MaxPositions = maxPositions,
            Norm = NormKind.Rms,
            NormEps = c.Positive("rms_norm_eps") ?? 1e-6,
            Activation = Activation.Silu,
            TiedHead = c.Bool("tie_word_embeddings") ?? false,
            Rope = new RopeSettings(RopeTheta(c), headDim),
            Tokens = new SpecialTokenIds(c.TokenId("bos_token_id", vocab) ?? 1, eos.Count > 0 ? eos : [2], c.Int("pad_token_id")),
            TorchDtype = c.String("torch_dtype") ?? c.String("dtype") ?? "float32",
            LayerLinears =
            [
                new("self_attn.q_proj", LinearRole.Query, q, hidden, attentionBias),
                new("self_attn.k_proj", LinearRole.Key, kv, hidden, attentionBias),
                new("self_attn.v_proj", LinearRole.Value, kv, hidden, attentionBias),
                new("self_attn.o_proj", LinearRole.Output, hidden, q, attentionBias),
                new("mlp.gate_proj", LinearRole.Gate, intermediate, hidden, mlpBias),
                new("mlp.up_proj", LinearRole.Up, intermediate, hidden, mlpBias),
                new("mlp.down_proj", LinearRole.Down, hidden, intermediate, mlpBias),
            ],
            LayerNorms =
            [
                new("input_layernorm", NormRole.PreAttention),
                new("post_attention_layernorm", NormRole.PreMlp),   // despite its name, the norm before the MLP
            ],
        };
    }

    static double RopeTheta(HfConfigJson c)
    {
        double theta = c.Positive("rope_theta") ?? 10000.0;
        foreach (var key in new[] { "rope_parameters", "rope_scaling" })
        {
            if (c.Object(key) is not { } rp) continue;
            string type = HfConfigJson.String(rp, "rope_type") ?? HfConfigJson.String(rp, "type") ?? "default";
            if (type != "default")
                throw new NotSupportedException($"{c.Path}: {key} type {SafeText.Quote(type)} is not implemented (only default RoPE is); remove it or use a model without RoPE scaling");
            theta = c.Positive(rp, "rope_theta", $"{key}.rope_theta") ?? theta;
        }
        return theta;
    }
}
