using QLoraNet.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// One transformer block with pre-norms, and post-norms where the family record has them (Gemma 2's sandwich):
/// h + post_attn?(attn(pre_attn(h))), then h + post_mlp?(mlp(pre_mlp(h))). The norms are registered under the
/// record's names ("input_layernorm", "post_attention_layernorm", ...).
/// A pure function of (hidden, cos, sin, mask) when no cache is given, so gradient checkpointing can recompute it.
/// </summary>
public sealed class LlamaDecoderLayer : nn.Module<Tensor, Tensor, Tensor, Tensor?, KvCache?, Tensor>
{
    /// <summary>Module names of the attention and the MLP inside a layer, as every supported checkpoint names them.</summary>
    public const string AttentionName = "self_attn", MlpName = "mlp";

    readonly LlamaAttention self_attn;
    readonly LlamaMlp mlp;
    readonly Dictionary<NormRole, RmsNorm> norms = new();

    /// <param name="norms">the layer's norms with their record entries (pre-attention and pre-MLP at least).</param>
    public LlamaDecoderLayer(string name, LlamaAttention selfAttn, LlamaMlp mlp, IEnumerable<(LayerNormWeight Spec, RmsNorm Norm)> norms)
        : base(name)
    {
        self_attn = selfAttn;
        this.mlp = mlp;
        RegisterComponents();
        foreach (var (spec, norm) in norms)
        {
            this.norms[spec.Role] = norm;
            register_module(spec.Path, norm);
        }
    }

    public LlamaAttention SelfAttn => self_attn;
    public LlamaMlp Mlp => mlp;

    /// <param name="hidden">(B, T, hidden)</param>
    /// <param name="cos">(B, T, headDim)</param>
    /// <param name="sin">(B, T, headDim)</param>
    /// <param name="mask">null = causal; else a boolean (.., T, S) mask, true = attend</param>
    /// <param name="cache">null in training</param>
    /// <returns>(B, T, hidden)</returns>
    public override Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var attended = self_attn.call(norms[NormRole.PreAttention].call(hidden), cos, sin, mask, cache);
        var h = hidden + Post(NormRole.PostAttention, attended);
        var output = h + Post(NormRole.PostMlp, mlp.call(norms[NormRole.PreMlp].call(h)));
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>The layer as a function of (hidden, cos, sin, mask) alone: what a checkpointing wrapper recomputes.</summary>
    public Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask) => forward(hidden, cos, sin, mask, null);

    Tensor Post(NormRole role, Tensor x) => norms.TryGetValue(role, out var norm) ? norm.call(x) : x;
}
