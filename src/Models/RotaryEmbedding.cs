using QLoraNet.Formats;
using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Rotary position embedding (Su et al. 2021, "RoFormer", arXiv:2104.09864) in Hugging Face's "rotate_half"
/// layout: dimension i is paired with dimension i + headDim/2 (not with its neighbour, as in the paper and in
/// Meta's original complex-number code), which is how HF-format Llama checkpoints have their q/k weights permuted.
/// Positions are given explicitly, so packed sequences (positions restarting at 0 inside a row) and a KV cache
/// (positions starting at the cache length) need nothing special here. The frequencies follow the family record's
/// <see cref="RopeSettings"/>: theta^(-2i/d), rescaled for Llama 3.1's "llama3" type (<see cref="InverseFrequencies"/>).
/// </summary>
public sealed class RotaryEmbedding : nn.Module<Tensor, (Tensor Cos, Tensor Sin)>
{
    // (headDim/2) fp32 frequencies. A non-persistent buffer, as in HF: it is derived from the config, so it never
    // appears in state_dict() or in a checkpoint.
    readonly Tensor inv_freq;
    readonly ScalarType dtype;

    public RotaryEmbedding(string name, long headDim, double theta, ScalarType dtype, Device device)
        : this(name, new RopeSettings(theta, checked((int)headDim)), dtype, device)
    {
    }

    public RotaryEmbedding(string name, RopeSettings rope, ScalarType dtype, Device device) : base(name)
    {
        this.dtype = dtype;
        inv_freq = InverseFrequencies(rope, device).DetachFromDisposeScope();
        register_buffer(nameof(inv_freq), inv_freq, persistent: false);
        RegisterComponents();
    }

    /// <summary>The (rotaryDim/2) fp32 inverse frequencies.</summary>
    public Tensor InvFreq => inv_freq;

    /// <summary>
    /// (rotaryDim/2) fp32 inverse frequencies theta^(-2i/d), with the record's scaling applied, in transformers' op
    /// order (arange in int64, to fp32, divide, pow, reciprocal; then _compute_llama3_parameters) so they match
    /// its rope_inv_freq bit for bit. Public so an exporter can write the same frequencies.
    /// </summary>
    public static Tensor InverseFrequencies(RopeSettings rope, Device device)
    {
        long d = rope.RotaryDim;
        if (d <= 0 || d % 2 != 0) throw new ArgumentException($"rotary embedding needs an even, positive rotary dimension, got {d}");
        using var scope = NewDisposeScope();
        var exponent = arange(0, d, 2, ScalarType.Int64, device).to(ScalarType.Float32) / d;
        var basis = full_like(exponent, rope.Theta);
        var invFreq = 1.0 / basis.pow(exponent);
        var scaled = rope.Scaling switch
        {
            RopeScalingKind.None => invFreq,
            RopeScalingKind.Llama3 => Llama3(invFreq, rope.Llama3 ?? throw new ArgumentException("RoPE type llama3 needs its parameters")),
            _ => throw new NotSupportedException($"RoPE scaling {rope.Scaling} is not implemented"),
        };
        return scaled.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Llama 3.1's rescaling (Meta's reference code; transformers' _compute_llama3_parameters): with wavelength
    /// λ = 2π/f, L = original_max_position_embeddings, keep f where λ &lt; L/high_freq_factor, divide it by factor
    /// where λ &gt; L/low_freq_factor, and in between blend (1 - s)·f/factor + s·f with s = (L/λ - low) / (high - low).
    /// Scalar-by-tensor divisions are written as reciprocal-then-multiply because that is what torch's
    /// <c>scalar / tensor</c> computes.
    /// </summary>
    static Tensor Llama3(Tensor invFreq, Llama3RopeScaling s)
    {
        double lowFreqWavelen = s.OriginalMaxPositions / s.LowFreqFactor;
        double highFreqWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
        var wavelen = invFreq.reciprocal() * (2 * Math.PI);
        var llama = where(wavelen.gt(lowFreqWavelen), invFreq / s.Factor, invFreq);
        var smooth = (wavelen.reciprocal() * (double)s.OriginalMaxPositions - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        var smoothed = (1.0 - smooth) * llama / s.Factor + smooth * llama;
        var medium = wavelen.lt(highFreqWavelen).logical_not().logical_and(wavelen.gt(lowFreqWavelen).logical_not());
        return where(medium, smoothed, llama);
    }

    /// <param name="positionIds">(B, T) int64 absolute positions.</param>
    /// <returns>cos and sin, each (B, T, rotaryDim) in the compute dtype.</returns>
    public override (Tensor Cos, Tensor Sin) forward(Tensor positionIds)
    {
        using var scope = NewDisposeScope();
        // (B, T, 1) * (rotaryDim/2) -> (B, T, rotaryDim/2), in fp32: bf16 angles would be off by whole radians at
        // positions in the thousands.
        var freqs = positionIds.to(ScalarType.Float32).unsqueeze(-1) * inv_freq;
        var emb = cat([freqs, freqs], dim: -1);                   // (B, T, rotaryDim)
        var cos = emb.cos().to(dtype).MoveToOuterDisposeScope();
        var sin = emb.sin().to(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>x * cos + rotate_half(x) * sin, where rotate_half([x1, x2]) = [-x2, x1] over the last dimension: HF's
    /// apply_rotary_pos_emb for one tensor. The model rotates q and k through the run's FusedRope (LlamaAttention);
    /// this is that kernel's torch-op reference (<see cref="RopeReference.Forward"/>), for callers that rotate one tensor.</summary>
    /// <param name="x">(B, heads, T, headDim)</param>
    /// <param name="cos">(B, T, headDim)</param>
    /// <param name="sin">(B, T, headDim)</param>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin) => RopeReference.Forward(x, cos, sin);
}
