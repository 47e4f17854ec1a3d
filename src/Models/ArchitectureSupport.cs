using QLoraNet.Formats;

namespace QLoraNet.Models;

/// <summary>
/// The features of a <see cref="ModelArchitecture"/> this model code computes, checked once before any weight is
/// read. Computed: RMSNorm plain or (1 + w) (<see cref="RmsNorm"/>), SwiGLU and GeGLU (<see cref="LlamaMlp"/>),
/// default and llama3 RoPE (<see cref="RotaryEmbedding"/>), GQA, biases, per-layer sliding windows, score
/// soft-capping and query_pre_attn_scalar (<see cref="LlamaAttention"/>, <see cref="ExplicitAttention"/>),
/// pre/post norms (<see cref="LlamaDecoderLayer"/>), scaled embeddings (<see cref="LlamaModel"/>), tied or untied
/// head and final-logit soft-capping (<see cref="LlamaForCausalLM"/>). A feature the record can describe but
/// nothing here computes yet (BitNet's squared ReLU, partial rotary dimensions) is refused by name; implementing it
/// means its arithmetic in the module that owns it plus removing its line here.
/// </summary>
public static class ArchitectureSupport
{
    /// <summary>Throws <see cref="NotSupportedException"/> naming the first feature of <paramref name="a"/> not implemented.</summary>
    public static void Require(ModelArchitecture a, string source)
    {
        string? missing =
            a.Norm is not (NormKind.Rms or NormKind.RmsOffsetOne) ? $"norm {a.Norm}"
            : a.Activation is not (Activation.Silu or Activation.GeluTanh) ? $"activation {a.Activation}"
            : a.Rope.Scaling is not (RopeScalingKind.None or RopeScalingKind.Llama3) ? $"RoPE scaling {a.Rope.Scaling}"
            : a.Rope.RotaryDim != a.HeadDim ? $"partial rotary dimension {a.Rope.RotaryDim} of {a.HeadDim}"
            : null;
        if (missing != null)
            throw new NotSupportedException($"{source}: the {a.Family} family needs {missing}, which QLoraNet does not compute yet");
        foreach (var role in Enum.GetValues<LinearRole>())
            if (a.LayerLinears.Count(l => l.Role == role) != 1)
                throw new NotSupportedException($"{source}: a decoder layer needs exactly one {role} linear; the {a.Family} record has {a.LayerLinears.Count(l => l.Role == role)}");
        foreach (var l in a.LayerLinears)
        {
            string group = l.IsAttention ? LlamaDecoderLayer.AttentionName : LlamaDecoderLayer.MlpName;
            if (l.Path != $"{group}.{l.Name}")
                throw new NotSupportedException($"{source}: linear '{l.Path}' must sit under '{group}.' in this model code");
        }
        foreach (var role in new[] { NormRole.PreAttention, NormRole.PreMlp })
            if (!a.LayerNorms.Any(n => n.Role == role))
                throw new NotSupportedException($"{source}: a decoder layer needs a {role} norm; the {a.Family} record has none");
    }
}
