using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>
/// Causal self-attention with rotary positions and grouped-query attention (Ainslie et al. 2023, "GQA",
/// arXiv:2305.13245): numHeads query heads share numKvHeads key/value heads, each kv head serving
/// numHeads/numKvHeads consecutive query heads (HF's repeat_kv order). The four projections sit in
/// <see cref="LinearSlots"/> under the names the family record gives them ("q_proj", ...), so LoRA finds
/// "...self_attn.q_proj" by path; a projection with a bias (attention_bias, Qwen2's q/k/v) adds it after the frozen
/// linear. A layer with a window (Mistral, Gemma 2's sliding layers) masks keys more than window - 1 positions back,
/// in training (within the packed mask, if any) and with a KV cache alike. Scores that need a soft-cap or a scale
/// other than 1/sqrt(headDim) (Gemma 2) go through <see cref="ExplicitAttention"/>; everything else through SDPA.
/// BitNet b1.58 normalises the merged heads before o_proj (attn_sub_norm, an RMSNorm over hidden).
/// q and k are rotated together by the run's <see cref="FusedRope"/> (one CUDA kernel each way, reading the projections'
/// (B, heads, T, D) views in place; elsewhere its torch-op reference, <see cref="RotaryEmbedding.Apply"/>'s arithmetic bit for bit).
/// </summary>
public sealed class LlamaAttention : nn.Module<Tensor, Tensor, Tensor, Tensor?, KvCache?, Tensor>, IDefersBackwardHandles
{
    static readonly LinearRole[] QkvRoles = [LinearRole.Query, LinearRole.Key, LinearRole.Value];

    readonly LinearSlots projections;
    readonly int layerIndex;
    readonly long numHeads;
    readonly long numKvHeads;
    readonly long headDim;
    readonly int? window;
    readonly double scale;
    readonly double? softCap;
    readonly bool explicitScores;
    readonly RmsNorm? subNorm;
    readonly FusedRope rope;
    BackwardHandles handles = new();

    /// <param name="projections">the Query, Key, Value and Output linears with their record entries and optional biases (out).</param>
    /// <param name="window">sliding attention window of this layer (the family record's), or null for full causal attention.</param>
    /// <param name="scale">the factor on q·kᵀ; null = headDim^-0.5 (SDPA's own).</param>
    /// <param name="softCap">c of the score soft-cap c · tanh(s / c) (Gemma 2's attn_logit_softcapping), or null.</param>
    /// <param name="rope">the run's fused RoPE (its kernel selection's); null = the torch-op reference.</param>
    /// <param name="subNorm">BitNet's attn_sub_norm over the merged heads before o_proj (registered under its own name), or null.</param>
    public LlamaAttention(string name, int layerIndex, long numHeads, long numKvHeads, long headDim,
        IEnumerable<(LayerLinear Spec, FrozenLinear Linear, Tensor? Bias)> projections, int? window = null,
        double? scale = null, double? softCap = null, FusedRope? rope = null, RmsNorm? subNorm = null) : base(name)
    {
        if (numHeads % numKvHeads != 0)
            throw new ArgumentException($"num_attention_heads ({numHeads}) must be a multiple of num_key_value_heads ({numKvHeads})");
        this.layerIndex = layerIndex;
        this.numHeads = numHeads;
        this.numKvHeads = numKvHeads;
        this.headDim = headDim;
        this.window = window;
        double sdpaScale = Math.Pow(headDim, -0.5);
        this.scale = scale ?? sdpaScale;
        this.softCap = softCap;
        explicitScores = softCap is not null || this.scale != sdpaScale;
        this.rope = rope ?? FusedKernels.Reference().Rope;
        RegisterComponents();
        if (subNorm is not null) register_module(subNorm.GetName(), this.subNorm = subNorm);
        this.projections = new LinearSlots(this);
        foreach (var (spec, linear, bias) in projections) this.projections.Add(spec.Name, spec.Role, linear, bias);
    }

    public long NumHeads => numHeads;
    public long NumKvHeads => numKvHeads;
    public long HeadDim => headDim;

    /// <summary>The q/k/v/o slots (for replacing a projection by name).</summary>
    public LinearSlots Projections => projections;

    public void DeferBackwardHandlesTo(BackwardHandles owner) => handles = owner;

    /// <param name="hidden">(B, T, hidden)</param>
    /// <param name="cos">(B, T, headDim) from <see cref="RotaryEmbedding"/></param>
    /// <param name="sin">(B, T, headDim)</param>
    /// <param name="mask">null for plain causal attention, or a boolean mask broadcastable to (B, heads, T, S),
    /// true = may attend, that replaces the causal rule (it must include causality itself; see <see cref="AttentionMask"/>).</param>
    /// <param name="cache">past keys/values; this layer appends its new ones.</param>
    /// <returns>(B, T, hidden)</returns>
    public override Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        // q, k and v read hidden: without a graph (a checkpointed forward, inference) their adapters may share work.
        var qkv = projections.CallShared(QkvRoles, hidden);
        var q = SplitHeads(qkv[0], numHeads);                                           // (B, nHeads, T, headDim)
        var k = SplitHeads(qkv[1], numKvHeads);                                         // (B, nKv, T, headDim)
        var v = SplitHeads(qkv[2], numKvHeads);                                         // (B, nKv, T, headDim)
        (q, k) = rope.ApplyQk(q, k, cos, sin, handles);                                 // same layouts, rotated

        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v);               // (B, nKv, S, headDim)
        var merged = Attend(q, k, v, mask, hidden.device);                              // (B, T, nHeads*headDim)
        if (subNorm is not null) merged = subNorm.call(merged);
        return projections.Call(LinearRole.Output, merged).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The attention proper, from rotated queries and keys: scores, mask and softmax-weighted values, heads merged.
    /// Differentiable by autograd (SDPA, or the explicit scores' torch ops): the explicit layer backward runs this
    /// part alone under autograd.
    /// </summary>
    /// <param name="q">(B, nHeads, T, headDim) rotated.</param>
    /// <param name="k">(B, nKv, S, headDim) rotated.</param>
    /// <param name="v">(B, nKv, S, headDim)</param>
    /// <param name="mask">as <see cref="forward"/>'s.</param>
    /// <returns>(B, T, nHeads*headDim)</returns>
    internal Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask, Device device)
    {
        using var scope = NewDisposeScope();
        long t = q.size(2), s = k.size(2);
        k = RepeatKv(k);                                                                // (B, nHeads, S, headDim)
        v = RepeatKv(v);

        // Which keys each query may see: the caller's mask (packed rows), else causal; a window cuts keys off, so
        // causality and the band go into one mask, within the packed mask if there is one.
        Tensor? allowed = mask;
        if (window is int w && s > w)
        {
            var band = AttentionMask.Causal(t, s, device, w);                           // (T, S)
            allowed = mask is null ? band : mask.logical_and(band);
        }
        Tensor attn;                                                                    // (B, nHeads, T, headDim)
        if (explicitScores)
        {
            attn = ExplicitAttention.Compute(q, k, v, allowed ?? AttentionMask.Causal(t, s, device), scale, softCap);
        }
        else
        {
            // SDPA's is_causal aligns the triangle top-left, right only when T == S; a single new token after a cache
            // sees everything; several new tokens after a cache need a shifted triangle. Its scale is 1/sqrt(headDim).
            bool isCausal = allowed is null && t == s && t > 1;
            if (allowed is null && t != s && t > 1) allowed = AttentionMask.Causal(t, s, device);
            attn = F.scaled_dot_product_attention(q, k, v, allowed, p: 0.0, is_casual: isCausal);
        }
        return MergeHeads(attn).MoveToOuterDisposeScope();
    }

    /// <summary>(B, T, heads*headDim) -> (B, heads, T, headDim): a projection's output split into heads, a view of it
    /// (the intermediate handle is released here, so disposing the result and the projection frees the storage).</summary>
    internal Tensor SplitHeads(Tensor projected, long heads)
    {
        using var split = projected.view(projected.size(0), projected.size(1), heads, headDim);   // (B, T, heads, headDim)
        return split.transpose(1, 2);
    }

    /// <summary>(B, heads, T, headDim) -> (B, T, heads*headDim): the heads merged back (a copy unless already laid out so).</summary>
    internal Tensor MergeHeads(Tensor x)
    {
        using var perToken = x.transpose(1, 2);                                          // (B, T, heads, headDim)
        return perToken.reshape(x.size(0), x.size(2), x.size(1) * headDim);
    }

    /// <summary>The run's RoPE (the explicit layer backward rotates and un-rotates with it).</summary>
    internal FusedRope Rope => rope;

    /// <summary>BitNet's attn_sub_norm, or null.</summary>
    internal RmsNorm? SubNorm => subNorm;

    /// <summary>Where this attention's custom backwards defer their gradients.</summary>
    internal BackwardHandles Handles => handles;

    /// <summary>(B, nKv, S, D) -> (B, nKv * rep, S, D), kv head j serving query heads j*rep .. j*rep+rep-1.</summary>
    Tensor RepeatKv(Tensor x)
    {
        long rep = numHeads / numKvHeads;
        if (rep == 1) return x;
        long b = x.shape[0], s = x.shape[2];
        return x.unsqueeze(2).expand(b, numKvHeads, rep, s, headDim).reshape(b, numHeads, s, headDim);
    }
}
