using QLoraNet.Formats;

namespace QLoraNet.Models;

/// <summary>
/// The features of a <see cref="ModelArchitecture"/> this model code computes, checked once before any weight is
/// read. A family that only combines implemented features (biases, tied or untied head, GQA, pre/post norms,
/// RMSNorm, SwiGLU, unscaled RoPE, per-layer sliding-window attention) loads without edits here; a feature the record can describe but nothing here
/// computes yet (Gemma's offset RMSNorm and GeGLU, BitNet's squared ReLU, Gemma 2's soft-caps, scaled embeddings)
/// is refused by name, and implementing it means its arithmetic in the module that owns it
/// (<see cref="RmsNorm"/>, <see cref="LlamaMlp"/>, <see cref="LlamaAttention"/>, <see cref="LlamaModel"/>) plus
/// removing its line here.
/// </summary>
public static class ArchitectureSupport
{
    /// <summary>Throws <see cref="NotSupportedException"/> naming the first feature of <paramref name="a"/> not implemented.</summary>
    public static void Require(ModelArchitecture a, string source)
    {
        string? missing =
            a.Norm != NormKind.Rms ? $"norm {a.Norm}"
            : a.Activation != Activation.Silu ? $"activation {a.Activation}"
            : a.Rope.Scaling != RopeScalingKind.None ? $"RoPE scaling {a.Rope.Scaling}"
            : a.Rope.RotaryDim != a.HeadDim ? $"partial rotary dimension {a.Rope.RotaryDim} of {a.HeadDim}"
            : a.AttentionSoftCap is not null ? "attention logit soft-capping"
            : a.FinalLogitSoftCap is not null ? "final logit soft-capping"
            : a.QueryPreAttentionScalar is not null ? "query_pre_attn_scalar"
            : a.ScaleEmbeddings ? "scaled embeddings"
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
