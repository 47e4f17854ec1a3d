using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>
/// Attention with the scores materialised, softmax(mask(cap(q·kᵀ · scale))) · v: the slow path beside SDPA's fast
/// one, for what SDPA cannot express: Gemma 2's soft-capping of every score, c · tanh(s / c) before the mask
/// (Gemma Team 2024, arXiv:2408.00118, §2), and a scale other than 1/sqrt(head_dim) (query_pre_attn_scalar;
/// TorchSharp 0.107's SDPA takes no scale). Op order as transformers' eager_attention_forward: scores in the compute
/// dtype, scaled, capped, masked, softmax in fp32, cast back, times v. It holds (B, heads, T, S) scores, which SDPA's
/// fused kernels avoid, so only layers that need it take this path.
/// </summary>
public static class ExplicitAttention
{
    /// <param name="q">(B, heads, T, headDim)</param>
    /// <param name="k">(B, heads, S, headDim), kv heads already repeated</param>
    /// <param name="v">(B, heads, S, headDim)</param>
    /// <param name="allowed">boolean, broadcastable to (B, heads, T, S), true = may attend; every row keeps one true entry.</param>
    /// <param name="scale">the factor on q·kᵀ.</param>
    /// <param name="softCap">c in c · tanh(s / c), or null for none.</param>
    /// <returns>(B, heads, T, headDim)</returns>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor allowed, double scale, double? softCap)
    {
        using var scope = NewDisposeScope();
        var scores = q.matmul(k.transpose(2, 3)) * scale;                                // (B, heads, T, S)
        if (softCap is double c) scores = (scores / c).tanh() * c;
        // -inf where masked: exp gives exactly 0, as transformers' additive finfo.min mask does for a row with any allowed key.
        scores = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity);
        var probs = F.softmax(scores, -1, ScalarType.Float32).to(q.dtype);              // (B, heads, T, S)
        return probs.matmul(v).MoveToOuterDisposeScope();
    }
}
