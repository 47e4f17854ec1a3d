namespace QLoraNet.Formats;

/// <summary>
/// Mistral 7B v0.1-style (Jiang et al. 2023, arXiv:2310.06825; transformers' MistralConfig): Llama's layer with
/// grouped-query attention, no biases, untied head by default, and sliding-window attention on every layer: with
/// sliding_window W a query attends to itself and the W - 1 keys before it. sliding_window null (v0.2 and later)
/// means full attention; absent means the config class's 4096. A layer_types list, if config.json has one, decides
/// per layer (<see cref="AttentionWindowConfig"/>).
/// </summary>
public sealed class MistralFamily : IModelFamily
{
    /// <summary>MistralConfig's sliding_window default.</summary>
    public const int DefaultWindow = 4096;

    public string Name => "mistral";
    public IReadOnlyList<string> ModelTypes { get; } = ["mistral"];
    public IReadOnlyList<string> Architectures { get; } = ["MistralForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c)
    {
        var shape = DecoderConfigFields.Attention(c);
        int intermediate = DecoderConfigFields.Intermediate(c);
        int layers = DecoderConfigFields.Layers(c);
        int? window = c.Has("sliding_window") ? c.Int("sliding_window") : DefaultWindow;
        return new ModelArchitecture
        {
            Family = Name,
            ModelType = c.String("model_type") ?? "mistral",
            Architectures = c.Strings("architectures"),
            NumLayers = layers,
            Hidden = shape.Hidden,
            Intermediate = intermediate,
            NumHeads = shape.Heads,
            NumKvHeads = shape.KvHeads,
            HeadDim = shape.HeadDim,
            VocabSize = DecoderConfigFields.Vocab(c),
            MaxPositions = c.Int("max_position_embeddings") ?? 4096 * 32,
            Norm = NormKind.Rms,
            NormEps = c.Positive("rms_norm_eps") ?? 1e-6,
            Activation = DecoderConfigFields.SiluOnly(c, "Mistral"),
            TiedHead = c.Bool("tie_word_embeddings") ?? false,
            Rope = RopeConfig.Read(c, shape.HeadDim),
            Tokens = DecoderConfigFields.Tokens(c, bos: 1, eos: 2, pad: null),
            TorchDtype = DecoderConfigFields.TorchDtype(c),
            LayerLinears = DecoderConfigFields.Linears(shape, intermediate, qkvBias: false, outputBias: false, mlpBias: false),
            LayerNorms = DecoderConfigFields.PreNorms,
            AttentionWindows = AttentionWindowConfig.Read(c, layers, window, _ => true, "sliding_window is null"),
        };
    }
}
