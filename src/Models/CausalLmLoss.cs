using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>Next-token cross-entropy: position t predicts label t+1; labels equal to IgnoreIndex (prompt tokens,
/// padding) do not count. Mean over the counted tokens, in fp32, as Hugging Face's ForCausalLMLoss.</summary>
public static class CausalLmLoss
{
    public const long IgnoreIndex = -100;

    /// <param name="logits">(B, T, vocab)</param>
    /// <param name="labels">(B, T) int64 token ids or IgnoreIndex</param>
    /// <returns>scalar mean loss</returns>
    public static Tensor Compute(Tensor logits, Tensor labels) => CrossEntropy(logits, labels, nn.Reduction.Mean);

    /// <summary>The same loss summed over the counted tokens instead of averaged: a trainer that accumulates
    /// micro-batches divides by the counted tokens of the whole step, so every token weighs the same (as
    /// transformers' num_items_in_batch).</summary>
    public static Tensor Sum(Tensor logits, Tensor labels) => CrossEntropy(logits, labels, nn.Reduction.Sum);

    static Tensor CrossEntropy(Tensor logits, Tensor labels, nn.Reduction reduction)
    {
        using var scope = NewDisposeScope();
        long t = logits.shape[1], vocab = logits.shape[2];
        var predicted = logits.narrow(1, 0, t - 1).to(ScalarType.Float32).reshape(-1, vocab);   // (B*(T-1), vocab)
        var targets = labels.narrow(1, 1, t - 1).reshape(-1);                                  // (B*(T-1))
        return F.cross_entropy(predicted, targets, ignore_index: IgnoreIndex, reduction: reduction).MoveToOuterDisposeScope();
    }
}
