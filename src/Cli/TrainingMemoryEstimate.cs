using QLoraNet.Formats;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// A rough GPU-memory estimate of one QLoRA training step (NF4 + double-quantized base, bf16 compute, LoRA on
/// q/k/v/o, AdamW, per-layer gradient checkpointing), in bytes, to set against measured peaks:
/// <code>
///   base        = NF4-DQ decoder projections + bf16 embedding, norms and head   (ModelFootprint, exact)
///   lora        = P_lora * (4 + 4 + 8)    fp32 parameters, gradients, Adam m and v;
///                 P_lora = L * r * (in + out) summed over q, k, v, o
///   boundaries  = L * B * T * H * 2       the bf16 hidden state each checkpointed layer keeps for its recompute
///   recompute   = B * T * (4 H + 3 Q + 3 K + 4 I) * 2   one layer's bf16 activations while it is recomputed
///                 + S * B * heads * T^2 * 2             and differentiated: norms, o_proj, residuals (H wide);
///                                                       q, rotated q, attention output (Q = heads x head_dim);
///                                                       k, v, rotated k (K = kv heads x head_dim); gate, up, act,
///                                                       product (I); plus S bf16 score-sized tensors: 2 (scores and
///                                                       probabilities, the math SDPA path) or 4 where scores are
///                                                       soft-capped (scaled, capped, masked, probabilities)
///   logits      = (3 + c) * B * T * V * 4   fp32 logits, their log-softmax and its gradient; c = 1 with a final
///                                           logit soft-cap (the capped copy)
///   context     = 0.5 GiB                 CUDA context and the caching allocator's slack
/// </code>
/// With multi-head attention and head_dim = H / heads (Llama 2) Q = K = H and the layer term is 10 H + 4 I.
/// Gemma's head_dim is independent of H (Gemma-7B: Q = 4096 against H = 3072) and GQA makes K smaller.
/// The factors are counts of tensors alive at once, not measurements; allocator fragmentation is not
/// modelled, so a measured peak above the estimate by 10-30 % is expected.
/// </summary>
public sealed record TrainingMemoryEstimate(long BaseWeights, long LoraParameters, long LoraState, long Boundaries,
    long LayerRecompute, long Logits, long CudaContext)
{
    public const long ContextBytes = 512L * 1024 * 1024;

    public long Total => BaseWeights + LoraState + Boundaries + LayerRecompute + Logits + CudaContext;

    public static TrainingMemoryEstimate Compute(ModelArchitecture c, int seq, int batch, int rank)
    {
        if (seq <= 0 || batch <= 0 || rank <= 0)
            throw new ArgumentException($"--seq {seq}, --batch {batch} and --lora-r {rank} must be positive");
        long b = batch, t = seq, h = c.Hidden, layers = c.NumLayers;
        var attention = c.LayerLinears.Where(l => l.IsAttention);
        long lora = layers * attention.Sum(l => rank * (l.OutFeatures + l.InFeatures));
        long baseBytes = ModelFootprint.Size(c, "nf4-dq", BaseFormat.Parse("nf4-dq"), ScalarType.BFloat16).Total;
        return new TrainingMemoryEstimate(
            BaseWeights: baseBytes,
            LoraParameters: lora,
            LoraState: lora * 16,
            Boundaries: layers * b * t * h * 2,
            LayerRecompute: b * t * (4 * h + 3L * c.NumHeads * c.HeadDim + 3L * c.NumKvHeads * c.HeadDim + 4L * c.Intermediate) * 2
                + (c.AttentionSoftCap is null ? 2 : 4) * b * c.NumHeads * t * t * 2,
            Logits: (c.FinalLogitSoftCap is null ? 3 : 4) * b * t * c.VocabSize * 4,
            CudaContext: ContextBytes);
    }
}
