using QLoraNet.Models;
using QLoraNet.Training.Data;
using static TorchSharp.torch;

namespace QLoraNet.Training.Losses;

/// <summary>
/// What a training objective minimises, one micro-batch at a time: <see cref="Sum"/> runs the model on the batch and
/// returns the loss summed over the batch's terms (its trained tokens for next-token prediction; its preference
/// pairs for DPO), and <see cref="Count"/> says how many terms that sum holds. A step divides the sum of its
/// micro-batches' sums by the sum of their counts, so the loss is one mean over the whole optimizer step however
/// the step is split into micro-batches or replicas (as transformers' num_items_in_batch); the evaluator takes the
/// same mean over the validation batches. The forward pass belongs to the loss, because an objective may need more
/// than one (DPO: the policy and the reference, i.e. the same model with its adapters switched off).
/// </summary>
public interface ITrainingLoss
{
    /// <summary>How many terms <see cref="Sum"/> adds up for <paramref name="batch"/> (computed from the labels alone, before any forward).</summary>
    long Count(Batch batch);

    /// <summary>A scalar: the loss summed over the batch's terms, attached to the graph when gradients are enabled.</summary>
    Tensor Sum(LlamaForCausalLM model, Batch batch);
}
