using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Training.Data;
using static TorchSharp.torch;

namespace QLoraNet.Training.Losses;

/// <summary>
/// Supervised fine-tuning's objective, the default: next-token cross-entropy (<see cref="CausalLmLoss"/>), a mean
/// over the trained tokens of the whole step. The terms are the trained tokens the shifted loss sees: labels other
/// than -100 at positions 1..T-1 (position t predicts label t+1). Packed rows get their block-diagonal mask.
/// The loss is taken from the final hidden states in chunks of tokens (<see cref="ChunkedCrossEntropy"/> through the
/// model's own head, <see cref="LlamaForCausalLM.Logits"/>), so the (B, T, vocab) fp32 logits are never made, in
/// training or in evaluation; per token it is the same arithmetic as the full logits' loss, and with a frozen head
/// (the usual case) it costs no more head matmuls than they do.
/// </summary>
/// <param name="logitsPerChunk">how many logits one chunk holds (<see cref="FusedKernels.LogitsPerChunk"/>).</param>
/// <param name="logitTransform">applied to each chunk's fp32 logits before the loss (a family's final soft-capping);
/// null = none.</param>
/// <param name="crossEntropy">the chunk's loss and gradient over its logits in the compute dtype (the run's
/// <see cref="FusedKernels.CrossEntropy"/>); null = the torch ops on fp32 logits.</param>
public sealed class CausalLmTokenMeanLoss(long logitsPerChunk = ChunkedCrossEntropy.DefaultLogitsPerChunk,
    Func<Tensor, Tensor>? logitTransform = null, FusedCrossEntropy? crossEntropy = null) : ITrainingLoss
{
    /// <summary>The loss as a run's kernel selection makes it: its chunk, and its fused cross-entropy.</summary>
    public static CausalLmTokenMeanLoss With(FusedKernels kernels) => new(kernels.LogitsPerChunk, crossEntropy: kernels.CrossEntropy);

    public long Count(Batch batch) => CountedTokens(batch);

    public Tensor Sum(LlamaForCausalLM model, Batch batch)
    {
        using var scope = NewDisposeScope();
        var x = batch.ToTensors(model.Device);
        var hidden = model.HiddenStates(x.InputIds, x.PositionIds, x.AttentionMask);     // (B, T, H)
        long chunk = ChunkedCrossEntropy.TokensPerChunk(model.Architecture.VocabSize, logitsPerChunk);
        var inPlace = crossEntropy is null ? null : new ChunkedCrossEntropy.InPlaceLoss(crossEntropy, model.ComputeDTypeLogits);
        return ChunkedCrossEntropy.Sum(hidden, model.Logits, x.Labels, chunk, model.BackwardHandles, logitTransform, HeadTrains(model), inPlace)
            .MoveToOuterDisposeScope();
    }

    /// <summary>Whether the output head (an adapter on lm_head, or a trainable tied embedding) has parameters to train.</summary>
    internal static bool HeadTrains(LlamaForCausalLM model) => model.HeadPath is { } head
        ? model.GetLinear(head).parameters().Any(p => p.requires_grad)
        : model.Model.EmbedTokens.Weight.requires_grad;

    /// <summary>The tokens <see cref="CausalLmLoss.Sum"/> counts in <paramref name="batch"/>.</summary>
    public static long CountedTokens(Batch batch)
    {
        long n = 0;
        for (int r = 0; r < batch.Rows; r++)
            for (int i = 1; i < batch.Length; i++)
                if (batch.Labels[r * batch.Length + i] != TokenizedExample.IgnoreIndex) n++;
        return n;
    }
}
