namespace QLoraNet.Formats;

/// <summary>
/// BitNet b1.58 (Ma et al. 2024, "The Era of 1-bit LLMs", arXiv:2402.17764; the 2B4T report, arXiv:2504.12285;
/// transformers' BitNetConfig and modeling_bitnet): Llama's decoder with every linear a BitLinear (ternary weights
/// times one absmean scale, 8-bit per-token activations: <see cref="ModelArchitecture.TernaryLinears"/>), squared
/// ReLU in the gated MLP, and "subln" norms inside each block: attn_sub_norm over the merged heads before o_proj,
/// ffn_sub_norm over the intermediate before down_proj (both plain RMSNorm). No biases. config.json's
/// quantization_config (quant_method "bitnet") must use linear_class "autobitlinear", whose weight_scale multiplies
/// the output (what the released checkpoints ship); "bitlinear" stores its inverse and is refused by name.
/// The fields shared with Llama come from <see cref="LlamaFamily.ParseCommon"/>; BitNetConfig's own defaults replace
/// Llama's (rms_norm_eps 1e-5, rope_theta 500000 via <see cref="RopeConfig"/>, Llama 3's token ids; untied head as Llama).
/// </summary>
public sealed class BitNetFamily : IModelFamily
{
    public string Name => "bitnet";
    public IReadOnlyList<string> ModelTypes { get; } = ["bitnet"];
    public IReadOnlyList<string> Architectures { get; } = ["BitNetForCausalLM"];

    public ModelArchitecture Parse(HfConfigJson c)
    {
        RequireAutoBitLinear(c);
        string act = c.String("hidden_act") ?? "relu2";
        if (act != "relu2") throw new NotSupportedException($"{c.Path}: hidden_act '{act}' is not supported (BitNet uses relu2)");
        if (c.Bool("attention_bias") == true) throw new NotSupportedException($"{c.Path}: attention_bias true is not supported (BitNet's linears have no bias)");
        var common = LlamaFamily.ParseCommon(c, Name, _ => Activation.ReluSquared);
        var shape = new AttentionShape(common.Hidden, common.NumHeads, common.NumKvHeads, common.HeadDim);
        return common with
        {
            NormEps = c.Positive("rms_norm_eps") ?? 1e-5,
            Rope = RopeConfig.Read(c, common.HeadDim, defaultTheta: 500000.0),
            Tokens = DecoderConfigFields.Tokens(c, bos: 128000, eos: 128001, pad: null),
            // BitLinear has no bias (attention_bias true is refused above; an mlp_bias key is not BitNet's).
            LayerLinears = DecoderConfigFields.Linears(shape, common.Intermediate, qkvBias: false, outputBias: false, mlpBias: false),
            LayerNorms =
            [
                .. DecoderConfigFields.PreNorms,
                new("self_attn.attn_sub_norm", NormRole.AttentionSub),
                new("mlp.ffn_sub_norm", NormRole.MlpSub),
            ],
            TernaryLinears = true,
        };
    }

    /// <summary>quantization_config, when present, must be BitNet's with the output-scaling linear class.</summary>
    static void RequireAutoBitLinear(HfConfigJson c)
    {
        if (c.Object("quantization_config") is not { } q) return;
        string method = HfConfigJson.String(q, "quant_method") ?? "";
        if (method != "bitnet")
            throw new NotSupportedException($"{c.Path}: quantization_config.quant_method '{method}' is not supported for BitNet (expected \"bitnet\")");
        string linearClass = HfConfigJson.String(q, "linear_class") ?? "bitlinear";
        if (linearClass != "autobitlinear")
            throw new NotSupportedException($"{c.Path}: quantization_config.linear_class '{linearClass}' is not supported; QLoraNet reads \"autobitlinear\" checkpoints (weight_scale multiplies the output), as microsoft/bitnet-b1.58-2B-4T ships");
    }
}
