namespace QLoraNet.Formats;

/// <summary>The attention shape of a decoder as config.json gives it: hidden size, query heads, key/value heads, head dimension.</summary>
internal sealed record AttentionShape(int Hidden, int Heads, int KvHeads, int HeadDim)
{
    public long QueryFeatures => (long)Heads * HeadDim;
    public long KvFeatures => (long)KvHeads * HeadDim;
}

/// <summary>
/// The config.json fields every decoder family reads the same way (transformers' configs share their names), with
/// the checks that make a contradicting config a one-line error before any weight is read: kv heads must divide
/// the heads, a derived head_dim needs hidden divisible by heads, and a family whose head_dim is hidden/heads by
/// definition refuses a head_dim that says otherwise.
/// </summary>
internal static class DecoderConfigFields
{
    /// <param name="defaultHeadDim">the config class's head_dim default (Gemma: 256); null = hidden / heads.</param>
    /// <param name="headDimIsDerived">the family has no independent head_dim (Qwen2): a head_dim that is not hidden/heads is refused.</param>
    public static AttentionShape Attention(HfConfigJson c, int? defaultHeadDim = null, bool headDimIsDerived = false)
    {
        int hidden = Positive(c, "hidden_size", c.RequiredInt("hidden_size"));
        int heads = Positive(c, "num_attention_heads", c.RequiredInt("num_attention_heads"));
        int kvHeads = Positive(c, "num_key_value_heads", c.Int("num_key_value_heads") ?? heads);
        if (heads % kvHeads != 0)
            throw new InvalidDataException($"{c.Path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        int? given = c.Int("head_dim") ?? defaultHeadDim;
        if (given is null && hidden % heads != 0)
            throw new InvalidDataException($"{c.Path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} and no head_dim is given");
        int headDim = Positive(c, "head_dim", given ?? hidden / heads);
        if (headDimIsDerived && (long)headDim * heads != hidden)
            throw new InvalidDataException($"{c.Path}: head_dim {headDim} x num_attention_heads {heads} = {(long)headDim * heads}, but this family's attention requires hidden_size {hidden}");
        if (headDim % 2 != 0) throw new InvalidDataException($"{c.Path}: head_dim {headDim} is odd; rotary position embedding rotates pairs of dimensions");
        return new AttentionShape(hidden, heads, kvHeads, headDim);
    }

    /// <summary>q/k/v/o then gate/up/down, with the Hugging Face paths every supported family shares.</summary>
    public static IReadOnlyList<LayerLinear> Linears(AttentionShape a, int intermediate, bool qkvBias, bool outputBias, bool mlpBias) =>
    [
        new("self_attn.q_proj", LinearRole.Query, a.QueryFeatures, a.Hidden, qkvBias),
        new("self_attn.k_proj", LinearRole.Key, a.KvFeatures, a.Hidden, qkvBias),
        new("self_attn.v_proj", LinearRole.Value, a.KvFeatures, a.Hidden, qkvBias),
        new("self_attn.o_proj", LinearRole.Output, a.Hidden, a.QueryFeatures, outputBias),
        new("mlp.gate_proj", LinearRole.Gate, intermediate, a.Hidden, mlpBias),
        new("mlp.up_proj", LinearRole.Up, intermediate, a.Hidden, mlpBias),
        new("mlp.down_proj", LinearRole.Down, a.Hidden, intermediate, mlpBias),
    ];

    /// <summary>input_layernorm before attention, post_attention_layernorm before the MLP (Llama, Mistral, Qwen2, Gemma).</summary>
    public static IReadOnlyList<LayerNormWeight> PreNorms { get; } =
    [
        new("input_layernorm", NormRole.PreAttention),
        new("post_attention_layernorm", NormRole.PreMlp),   // despite its name, the norm before the MLP
    ];

    public static int Intermediate(HfConfigJson c) => Positive(c, "intermediate_size", c.RequiredInt("intermediate_size"));

    public static int Layers(HfConfigJson c) => Positive(c, "num_hidden_layers", c.RequiredInt("num_hidden_layers"));

    public static int Vocab(HfConfigJson c) => Positive(c, "vocab_size", c.RequiredInt("vocab_size"));

    /// <summary>bos/eos/pad ids with the config class's defaults; eos may be one id or a list (Llama 3).</summary>
    public static SpecialTokenIds Tokens(HfConfigJson c, int? bos, int eos, int? pad)
    {
        // Ids config.json gives are checked against vocab_size (an id past it would index out of the embedding);
        // pad_token_id is not: old Llama configs carry -1 there, and no table is indexed by it.
        int vocab = Vocab(c);
        var eosIds = c.TokenIds("eos_token_id", vocab);
        if (eosIds.Count == 0) eosIds = [eos];
        return new SpecialTokenIds(c.TokenId("bos_token_id", vocab) ?? bos, eosIds, c.Has("pad_token_id") ? c.Int("pad_token_id") : pad);
    }

    /// <summary>torch_dtype (transformers 4) or dtype (transformers 5).</summary>
    public static string TorchDtype(HfConfigJson c) => c.String("torch_dtype") ?? c.String("dtype") ?? "float32";

    /// <summary>The MLP activation named by the first present key, or <paramref name="fallback"/>; names without a member are refused.</summary>
    public static Activation ActivationOf(HfConfigJson c, string family, string fallback, params string[] keys)
    {
        string key = keys.FirstOrDefault(k => c.String(k) is not null) ?? keys[0];
        string name = c.String(key) ?? fallback;
        return name switch
        {
            "silu" => Activation.Silu,
            "gelu_pytorch_tanh" => Activation.GeluTanh,
            _ => throw new NotSupportedException($"{c.Path}: {key} {SafeText.Quote(name)} is not supported for {family} (QLoraNet computes silu and gelu_pytorch_tanh)"),
        };
    }

    /// <summary>SwiGLU families: hidden_act must be silu (its default).</summary>
    public static Activation SiluOnly(HfConfigJson c, string family)
    {
        string act = c.String("hidden_act") ?? "silu";
        return act == "silu" ? Activation.Silu
            : throw new NotSupportedException($"{c.Path}: hidden_act {SafeText.Quote(act)} is not supported ({family} uses silu)");
    }

    /// <summary>Refuses a boolean switch QLoraNet does not compute when config.json turns it on.</summary>
    public static void RefuseIfTrue(HfConfigJson c, string key, string what)
    {
        if (c.Bool(key) == true) throw new NotSupportedException($"{c.Path}: {key} true ({what}) is not implemented; QLoraNet loads causal decoders only");
    }

    /// <summary>A size in [1, its <see cref="ConfigLimits"/> limit], checked as it is read, before anything is derived from it.</summary>
    static int Positive(HfConfigJson c, string key, int value) => ConfigLimits.Field(c.Path, key, value);
}
