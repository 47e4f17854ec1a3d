namespace QLoraNet.Formats;

/// <summary>
/// Qwen2 / Qwen2.5 (Yang et al. 2024, arXiv:2407.10671; transformers' Qwen2Config): Llama's layer with biases on
/// q, k and v (not on o_proj, not in the MLP), grouped-query attention, large rope_theta (1e6), tied embeddings in
/// the small sizes. head_dim is hidden / heads by definition. Sliding windows only with use_sliding_window true
/// (every published Qwen2.5 has it false, whatever sliding_window says), then on the layers from
/// max_window_layers on, unless layer_types says otherwise; a layer_types entry "sliding_attention" while
/// use_sliding_window is false contradicts and is refused. Qwen2-VL's multimodal RoPE (use_mrope) is refused.
/// </summary>
public sealed class Qwen2Family : IModelFamily
{
    public string Name => "qwen2";
    public IReadOnlyList<string> ModelTypes { get; } = ["qwen2"];
    public IReadOnlyList<string> Architectures { get; } = ["Qwen2ForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c)
    {
        DecoderConfigFields.RefuseIfTrue(c, "use_mrope", "multimodal rotary embedding");
        var shape = DecoderConfigFields.Attention(c, headDimIsDerived: true);
        int intermediate = DecoderConfigFields.Intermediate(c);
        int layers = DecoderConfigFields.Layers(c);
        bool useWindow = c.Bool("use_sliding_window") ?? false;
        int? window = !useWindow ? null : c.Has("sliding_window") ? c.Int("sliding_window") : 4096;
        int maxWindowLayers = c.Int("max_window_layers") ?? 28;
        return new ModelArchitecture
        {
            Family = Name,
            ModelType = c.String("model_type") ?? "qwen2",
            Architectures = c.Strings("architectures"),
            NumLayers = layers,
            Hidden = shape.Hidden,
            Intermediate = intermediate,
            NumHeads = shape.Heads,
            NumKvHeads = shape.KvHeads,
            HeadDim = shape.HeadDim,
            VocabSize = DecoderConfigFields.Vocab(c),
            MaxPositions = c.Int("max_position_embeddings") ?? 32768,
            Norm = NormKind.Rms,
            NormEps = c.Positive("rms_norm_eps") ?? 1e-6,
            Activation = DecoderConfigFields.SiluOnly(c, "Qwen2"),
            TiedHead = c.Bool("tie_word_embeddings") ?? false,
            Rope = RopeConfig.Read(c, shape.HeadDim),
            Tokens = DecoderConfigFields.Tokens(c, bos: null, eos: 151643, pad: null),
            TorchDtype = DecoderConfigFields.TorchDtype(c),
            LayerLinears = DecoderConfigFields.Linears(shape, intermediate, qkvBias: true, outputBias: false, mlpBias: false),
            LayerNorms = DecoderConfigFields.PreNorms,
            AttentionWindows = AttentionWindowConfig.Read(c, layers, window, i => i >= maxWindowLayers,
                useWindow ? "sliding_window is null" : "use_sliding_window is false"),
        };
    }
}
