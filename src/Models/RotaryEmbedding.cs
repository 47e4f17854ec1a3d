using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Rotary position embedding (Su et al. 2021, "RoFormer", arXiv:2104.09864) in Hugging Face's "rotate_half"
/// layout: dimension i is paired with dimension i + headDim/2 (not with its neighbour, as in the paper and in
/// Meta's original complex-number code), which is how HF-format Llama checkpoints have their q/k weights permuted.
/// Positions are given explicitly, so packed sequences (positions restarting at 0 inside a row) and a KV cache
/// (positions starting at the cache length) need nothing special here.
/// </summary>
public sealed class RotaryEmbedding : nn.Module<Tensor, (Tensor Cos, Tensor Sin)>
{
    // (headDim/2) fp32 frequencies theta^(-2i/headDim). A non-persistent buffer, as in HF: it is derived from the
    // config, so it never appears in state_dict() or in a checkpoint.
    readonly Tensor inv_freq;
    readonly ScalarType dtype;

    public RotaryEmbedding(string name, long headDim, double theta, ScalarType dtype, Device device) : base(name)
    {
        if (headDim % 2 != 0) throw new ArgumentException($"rotary embedding needs an even head dimension, got {headDim}");
        this.dtype = dtype;
        using (var scope = NewDisposeScope())
        {
            // Same op order as HF (arange in int64, to fp32, divide, pow, reciprocal) so the frequencies match bit for bit.
            var exponent = arange(0, headDim, 2, ScalarType.Int64, device).to(ScalarType.Float32) / headDim;
            var basis = full_like(exponent, theta);
            inv_freq = (1.0 / basis.pow(exponent)).MoveToOuterDisposeScope();
        }
        register_buffer(nameof(inv_freq), inv_freq, persistent: false);
        RegisterComponents();
    }

    /// <param name="positionIds">(B, T) int64 absolute positions.</param>
    /// <returns>cos and sin, each (B, T, headDim) in the compute dtype.</returns>
    public override (Tensor Cos, Tensor Sin) forward(Tensor positionIds)
    {
        using var scope = NewDisposeScope();
        // (B, T, 1) * (headDim/2) -> (B, T, headDim/2), in fp32: bf16 angles would be off by whole radians at
        // positions in the thousands.
        var freqs = positionIds.to(ScalarType.Float32).unsqueeze(-1) * inv_freq;
        var emb = cat([freqs, freqs], dim: -1);                   // (B, T, headDim)
        var cos = emb.cos().to(dtype).MoveToOuterDisposeScope();
        var sin = emb.sin().to(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>x * cos + rotate_half(x) * sin, where rotate_half([x1, x2]) = [-x2, x1] over the last dimension.</summary>
    /// <param name="x">(B, heads, T, headDim)</param>
    /// <param name="cos">(B, T, headDim)</param>
    /// <param name="sin">(B, T, headDim)</param>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = cat([-x2, x1], dim: -1);
        var c = cos.unsqueeze(1);                                  // (B, 1, T, headDim): broadcast over heads
        var s = sin.unsqueeze(1);
        return (x * c + rotated * s).MoveToOuterDisposeScope();
    }
}
