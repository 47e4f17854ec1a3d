using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Training.Data;
using static TorchSharp.torch;

namespace QLoraNet.Training.Losses;

/// <summary>
/// Direct Preference Optimization's loss (Rafailov et al. 2023, eq. 7), TRL's default "sigmoid" form: per pair,
/// -log σ(β · ((log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x)))), where y_w is the chosen answer,
/// y_l the rejected one, log π(y|x) the sum of the answer tokens' log-probabilities under the model being trained
/// (base + adapters) and π_ref the frozen starting point: the same model with its adapters switched off
/// (<see cref="AdapterSwitch.DisableAdapters"/>, as peft's DPO does; no second copy of the weights). The terms are
/// the pairs: one row of the batch each, its chosen conversation as document 1 and its rejected one as document 2
/// (<see cref="TrainingData"/>'s preference rows). While the adapter computes the base (B = 0 at the start) every
/// margin is 0 and the loss is log 2 per pair.
/// Each answer's log-probability comes from <see cref="ChunkedCrossEntropy"/> over the hidden states of its own
/// document, so no (T, vocab) logits are kept and the head runs once per token, as in supervised fine-tuning; the
/// reference pass runs without a graph.
/// </summary>
/// <param name="beta">β: how far from the reference the policy may move for a given preference (TRL's default 0.1).</param>
/// <param name="logitsPerChunk">how many logits one chunk of the loss holds (<see cref="FusedKernels.LogitsPerChunk"/>).</param>
public sealed class DpoLoss(double beta, long logitsPerChunk = ChunkedCrossEntropy.DefaultLogitsPerChunk) : ITrainingLoss
{
    public double Beta => beta;

    public long Count(Batch batch) => batch.Rows;

    public Tensor Sum(LlamaForCausalLM model, Batch batch)
    {
        using var scope = NewDisposeScope();
        return (-nn.functional.logsigmoid(Margins(model, batch) * beta)).sum().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Each pair's (log π(chosen) - log π_ref(chosen)) - (log π(rejected) - log π_ref(rejected)), (B) fp32, attached to
    /// the graph when gradients are enabled. β times it is TRL's "rewards/margins"; a pair is ranked right when it is
    /// positive ("rewards/accuracies").
    /// </summary>
    public Tensor Margins(LlamaForCausalLM model, Batch batch)
    {
        var spans = AnswerSpans(batch);
        using var scope = NewDisposeScope();
        var x = batch.ToTensors(model.Device);
        var policy = LogProbabilities(model, x, spans);                                   // (B, 2): chosen, rejected
        Tensor reference;
        using (no_grad())
        using (model.DisableAdapters())
            reference = LogProbabilities(model, x, spans);                                // (B, 2), no graph
        var ratios = policy - reference;                                                  // (B, 2)
        return (ratios.select(1, 0) - ratios.select(1, 1)).MoveToOuterDisposeScope();    // (B)
    }

    /// <summary>
    /// log π(answer | prompt) of each row's two documents: the negated summed cross-entropy of the document's trained
    /// labels, taken over the document's own positions (its first label is ignored, so nothing crosses the boundary).
    /// </summary>
    Tensor LogProbabilities(LlamaForCausalLM model, BatchTensors x, (int Start, int Length)[,] spans)
    {
        using var scope = NewDisposeScope();
        var hidden = model.HiddenStates(x.InputIds, x.PositionIds, x.AttentionMask);     // (B, T, H)
        long chunk = ChunkedCrossEntropy.TokensPerChunk(model.Architecture.VocabSize, logitsPerChunk);
        bool headTrains = CausalLmTokenMeanLoss.HeadTrains(model);
        var rows = new List<Tensor>();
        for (int r = 0; r < spans.GetLength(0); r++)
        {
            var pair = new Tensor[2];
            for (int d = 0; d < 2; d++)
            {
                var (start, length) = spans[r, d];
                var h = hidden.narrow(0, r, 1).narrow(1, start, length);                  // (1, len, H)
                var labels = x.Labels.narrow(0, r, 1).narrow(1, start, length);           // (1, len)
                pair[d] = -ChunkedCrossEntropy.Sum(h, model.Logits, labels, chunk, model.BackwardHandles, headTrains: headTrains);
            }
            rows.Add(stack(pair));
        }
        return stack(rows).MoveToOuterDisposeScope();                                     // (B, 2)
    }

    /// <summary>Where each row's chosen (document 1) and rejected (document 2) conversation lies.</summary>
    static (int Start, int Length)[,] AnswerSpans(Batch batch)
    {
        var spans = new (int, int)[batch.Rows, 2];
        for (int r = 0; r < batch.Rows; r++)
        {
            var docs = batch.DocumentIds.AsSpan(r * batch.Length, batch.Length);
            int first = docs.IndexOf(1L), second = docs.IndexOf(2L), end = docs.LastIndexOf(2L) + 1;
            if (first != 0 || second < 0 || docs.IndexOf(3L) >= 0)
                throw new InvalidDataException($"DPO needs rows of exactly one preference pair (chosen, then rejected); row {r} of the batch is not one (data.format must be preference)");
            spans[r, 0] = (0, second);
            spans[r, 1] = (second, end - second);
        }
        return spans;
    }
}
