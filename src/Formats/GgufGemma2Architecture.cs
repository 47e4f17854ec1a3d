using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// llama.cpp's <c>gemma2</c> architecture (conversion/gemma.py Gemma2Model; src/models/gemma2.cpp): Gemma's tensors
/// and (1 + w) norms written as w + 1 (<see cref="GgufGemmaArchitecture"/>), the post-attention and post-MLP norms
/// (<c>post_attention_norm</c>, <c>post_ffw_norm</c>), <c>gemma2.attn_logit_softcapping</c> and
/// <c>gemma2.final_logit_softcapping</c> (llama.cpp always caps: a config without caps is refused), and
/// <c>gemma2.attention.sliding_window</c> on every other layer starting with layer 0 (llama.cpp's default pattern
/// for gemma2; another layout is refused).
/// <para>The query scale: llama.cpp does not read query_pre_attn_scalar; it scales q by 1/sqrt(head_dim), or
/// 1/sqrt(hidden / heads) for a 46-layer model (Gemma 2 27B). When the config's query_pre_attn_scalar gives another
/// factor, the difference is folded into q's rows: q' = q · sqrt(llama.cpp's denominator / query_pre_attn_scalar),
/// exact because RoPE is linear and the scale is applied after it.</para>
/// </summary>
public sealed class GgufGemma2Architecture : IGgufArchitecture
{
    public string Name => "gemma2";

    public IReadOnlyList<string> Check(ModelArchitecture arch)
    {
        if (arch.AttentionSoftCap is null || arch.FinalLogitSoftCap is null)
            throw new NotSupportedException("llama.cpp's gemma2 architecture always soft-caps attention and final logits; this config sets no cap");
        var windows = arch.AttentionWindows ?? [];
        for (int i = 0; i < arch.NumLayers; i++)
            if ((windows.Count > i && windows[i] is not null) != (i % 2 == 0))
                throw new NotSupportedException($"llama.cpp's gemma2 architecture has sliding windows on even layers only; this config's layer {i} differs");
        GgufArchitectureChecks.SingleWindow(arch);
        return GgufGemmaArchitecture.CheckGemma(arch, Name);
    }

    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata(ModelArchitecture arch)
    {
        yield return new("gemma2.attn_logit_softcapping", GgufValue.Float32((float)arch.AttentionSoftCap!.Value));
        yield return new("gemma2.final_logit_softcapping", GgufValue.Float32((float)arch.FinalLogitSoftCap!.Value));
        if (GgufArchitectureChecks.SingleWindow(arch) is int w) yield return new("gemma2.attention.sliding_window", GgufValue.UInt32((uint)w));
        yield return new("tokenizer.ggml.add_space_prefix", GgufValue.Bool(false));
    }

    public bool Loads(string hfName, ModelArchitecture arch) => hfName != arch.HeadWeight;

    public Tensor Convert(string ggufName, Tensor weight, ModelArchitecture arch)
    {
        if (GgufTensorNames.IsLinear(ggufName, "attn_q") && QueryFold(arch) is var f && f != 1.0)
            return weight.to(ScalarType.Float32) * f;                    // in fp32: a bf16 product would round to 8 bits
        return GgufGemmaArchitecture.NormPlusOne(ggufName, weight);
    }

    /// <summary>The factor on q that turns llama.cpp's fixed query scale into the config's query_pre_attn_scalar^-0.5.</summary>
    public static double QueryFold(ModelArchitecture arch)
    {
        double llamaCppDenominator = arch.NumLayers == 46 ? arch.Hidden / arch.NumHeads : arch.HeadDim;   // integer division, as llama.cpp
        return Math.Sqrt(llamaCppDenominator / (arch.QueryPreAttentionScalar ?? arch.HeadDim));
    }
}
