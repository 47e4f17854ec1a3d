namespace QLoraNet.Formats;

/// <summary>
/// Gemma 2 (Gemma Team 2024, arXiv:2408.00118; transformers' Gemma2Config): Gemma's GeGLU, (1 + w) RMSNorm, scaled
/// embeddings and tied head, plus
/// <list type="bullet">
/// <item>four norms per layer, around attention and around the MLP: input_layernorm, post_attention_layernorm (after
/// attention, before the residual add), pre_feedforward_layernorm, post_feedforward_layernorm;</item>
/// <item>attention scores scaled by query_pre_attn_scalar^-0.5 instead of head_dim^-0.5, then soft-capped,
/// c · tanh(s / c) with c = attn_logit_softcapping, before the mask;</item>
/// <item>final logits soft-capped the same way with final_logit_softcapping;</item>
/// <item>sliding-window attention (sliding_window, absent = 4096) on alternating layers: layer_types when given,
/// else every even layer (0, 2, ...), as Gemma2Config fills it in.</item>
/// </list>
/// The activation key is hidden_activation (hidden_act as a fallback); null caps mean no capping.
/// </summary>
public sealed class Gemma2Family : IModelFamily
{
    public string Name => "gemma2";
    public IReadOnlyList<string> ModelTypes { get; } = ["gemma2"];
    public IReadOnlyList<string> Architectures { get; } = ["Gemma2ForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c)
    {
        var common = GemmaFamily.ParseCommon(c, Name, "Gemma 2");
        int? window = c.Has("sliding_window") ? c.Int("sliding_window") : 4096;
        return common with
        {
            LayerNorms =
            [
                new("input_layernorm", NormRole.PreAttention),
                new("post_attention_layernorm", NormRole.PostAttention),
                new("pre_feedforward_layernorm", NormRole.PreMlp),
                new("post_feedforward_layernorm", NormRole.PostMlp),
            ],
            AttentionWindows = AttentionWindowConfig.Read(c, common.NumLayers, window, i => i % 2 == 0, "sliding_window is null"),
            AttentionSoftCap = PositiveOrNull(c, "attn_logit_softcapping"),
            FinalLogitSoftCap = PositiveOrNull(c, "final_logit_softcapping"),
            QueryPreAttentionScalar = PositiveOrNull(c, "query_pre_attn_scalar") ?? 256,   // Gemma2Config's default
        };
    }

    static double? PositiveOrNull(HfConfigJson c, string key) => c.Double(key) switch
    {
        null => null,
        > 0 and var v => v,
        var v => throw new InvalidDataException($"{c.Path}: {key} {v} must be positive (or null for none)"),
    };
}
