using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// One pre-norm transformer block: h + attn(norm(h)), then h + mlp(norm(h)).
/// A pure function of (hidden, cos, sin, mask) when no cache is given, so gradient checkpointing can recompute it.
/// </summary>
public sealed class LlamaDecoderLayer : nn.Module<Tensor, Tensor, Tensor, Tensor?, KvCache?, Tensor>
{
    readonly LlamaAttention self_attn;
    readonly LlamaMlp mlp;
    readonly RmsNorm input_layernorm;
    readonly RmsNorm post_attention_layernorm;

    public LlamaDecoderLayer(string name, LlamaAttention selfAttn, LlamaMlp mlp, RmsNorm inputLayernorm, RmsNorm postAttentionLayernorm)
        : base(name)
    {
        self_attn = selfAttn;
        this.mlp = mlp;
        input_layernorm = inputLayernorm;
        post_attention_layernorm = postAttentionLayernorm;
        RegisterComponents();
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
        var h = hidden + self_attn.call(input_layernorm.call(hidden), cos, sin, mask, cache);
        var output = h + mlp.call(post_attention_layernorm.call(h));
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>The layer as a function of (hidden, cos, sin, mask) alone: what a checkpointing wrapper recomputes.</summary>
    public Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask) => forward(hidden, cos, sin, mask, null);
}
