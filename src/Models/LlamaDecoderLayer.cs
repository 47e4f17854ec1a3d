using QLoraNet.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// One transformer block with pre-norms, and post-norms where the family record has them (Gemma 2's sandwich):
/// h + post_attn?(attn(pre_attn(h))), then h + post_mlp?(mlp(pre_mlp(h))). The norms are registered under the
/// record's names ("input_layernorm", "post_attention_layernorm", ...).
/// The residual add after attention goes into the pre-MLP norm (<see cref="RmsNorm.AddAndNorm"/>: one kernel on
/// CUDA): h = hidden + post_attn?(attn) and pre_mlp(h) are the same arithmetic with or without Gemma 2's post-norm,
/// which is applied to the attention output first. The add after the MLP is not fused with the next layer's input
/// norm (another module's; the layer must stay a function of its input for checkpointing); without a post-norm and
/// without a graph it is the down projection's GEMM epilogue where down is a bare frozen linear
/// (<see cref="LlamaMlp.ForwardAdding"/>), else a plain add.
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

    /// <summary>The norm in <paramref name="role"/>, or null when the family has none there.</summary>
    public RmsNorm? Norm(NormRole role) => norms.GetValueOrDefault(role);

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
        var (h, normed) = norms[NormRole.PreMlp].AddAndNorm(Post(NormRole.PostAttention, attended), hidden); // h = hidden + attn
        // h + mlp(normed): without a post-norm, the add may be the down projection's GEMM epilogue (LlamaMlp.ForwardAdding).
        var output = norms.ContainsKey(NormRole.PostMlp)
            ? h + Post(NormRole.PostMlp, mlp.call(normed))
            : mlp.ForwardAdding(normed, h);                                                        // (B, T, hidden)
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>The layer as a function of (hidden, cos, sin, mask) alone: what a checkpointing wrapper recomputes.</summary>
    public Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask) => forward(hidden, cos, sin, mask, null);

    /// <summary>Whether a checkpointed recomputation may take <see cref="ExplicitLayerBackward"/> (when the layer's
    /// structure allows it); off = always autograd, the reference.</summary>
    public bool ExplicitBackward { get; set; } = true;

    /// <summary>Whether the explicit backward keeps each dense weight from the recomputation for its backward (one
    /// dequantization instead of two, the layer's dense weights held meanwhile).</summary>
    public bool KeepWeightsForBackward { get; set; } = true;

    long explicitBackwards, autogradBackwards, recordedBackwards;

    /// <summary>How many checkpointed backwards of this layer ran explicitly and through autograd.</summary>
    public (long Explicit, long Autograd) BackwardCounts => (Interlocked.Read(ref explicitBackwards), Interlocked.Read(ref autogradBackwards));

    /// <summary>How many of the explicit backwards read the record their forward kept instead of recomputing the layer
    /// (the last layer's, <see cref="LayerCheckpoint"/>).</summary>
    public long RecordedBackwards => Interlocked.Read(ref recordedBackwards);

    internal void CountBackward(bool explicitly) =>
        Interlocked.Increment(ref explicitly ? ref explicitBackwards : ref autogradBackwards);

    internal void CountRecordedBackward() => Interlocked.Increment(ref recordedBackwards);

    /// <summary>The record this layer's forward kept for its backward, if any (<see cref="LayerCheckpoint"/>).</summary>
    internal PendingRecord PendingRecord { get; } = new();

    protected override void Dispose(bool disposing)
    {
        if (disposing) PendingRecord.Dispose();
        base.Dispose(disposing);
    }

    Tensor Post(NormRole role, Tensor x) => norms.TryGetValue(role, out var norm) ? norm.call(x) : x;
}
