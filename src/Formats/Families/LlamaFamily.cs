namespace QLoraNet.Formats;

/// <summary>
/// Llama 2 and Llama 3 / 3.1 / 3.2 (Touvron et al. 2023; Meta 2024; transformers' LlamaConfig): RMSNorm before
/// attention and before the MLP, SwiGLU, RoPE, grouped-query attention, optional biases (attention_bias on q/k/v/o,
/// mlp_bias on gate/up/down), tied head (Llama 3.2 1B/3B) or not, eos_token_id one id or a list (Llama 3).
/// RoPE: rope_theta at the top level (absent means 10000), rope_parameters (transformers 5) or rope_scaling
/// (transformers 4) with rope_type "default" or "llama3" (Llama 3.1's frequency rescaling); other types are refused
/// by name (<see cref="RopeConfig"/>). head_dim may be given (Llama 3.2's equals hidden/heads anyway).
/// </summary>
public sealed class LlamaFamily : IModelFamily
{
    public string Name => "llama";
    public IReadOnlyList<string> ModelTypes { get; } = ["llama"];
    public IReadOnlyList<string> Architectures { get; } = ["LlamaForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c) => ParseCommon(c, Name, c => DecoderConfigFields.SiluOnly(c, "Llama"));

    /// <summary>
    /// The fields Llama and the decoders built on it (BitNet) read alike, with Llama's defaults; BitNet replaces its
    /// own with <c>with</c>, as Gemma 2 does over Gemma. <paramref name="activation"/> reads hidden_act (Llama accepts
    /// silu only), in the same place among the checks as before.
    /// </summary>
    internal static ModelArchitecture ParseCommon(HfConfigJson c, string family, Func<HfConfigJson, Activation> activation)
    {
        var shape = DecoderConfigFields.Attention(c);
        int intermediate = DecoderConfigFields.Intermediate(c);
        bool attentionBias = c.Bool("attention_bias") ?? false, mlpBias = c.Bool("mlp_bias") ?? false;
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
            MaxPositions = c.Int("max_position_embeddings") ?? 2048,
            Norm = NormKind.Rms,
            NormEps = c.Positive("rms_norm_eps") ?? 1e-6,
            Activation = activation(c),
            TiedHead = c.Bool("tie_word_embeddings") ?? false,
            Rope = RopeConfig.Read(c, shape.HeadDim),
            Tokens = DecoderConfigFields.Tokens(c, bos: 1, eos: 2, pad: null),
            TorchDtype = DecoderConfigFields.TorchDtype(c),
            LayerLinears = DecoderConfigFields.Linears(shape, intermediate, attentionBias, attentionBias, mlpBias),
            LayerNorms = DecoderConfigFields.PreNorms,
        };
    }
}
