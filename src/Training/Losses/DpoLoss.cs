using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Training.Config;
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
/// TRL's other loss types are here too (<see cref="DpoLossKind"/>): label smoothing of the sigmoid loss (cDPO), the
/// hinge loss, and IPO, whose log-probabilities are per-token means (as TRL computes them for IPO).
/// </summary>
/// <param name="beta">β: how far from the reference the policy may move for a given preference (TRL's default 0.1).</param>
/// <param name="kind">the loss of a pair's margin.</param>
/// <param name="labelSmoothing">ε of cDPO (sigmoid only): the share of pairs assumed to be labelled the wrong way round.</param>
/// <param name="rpoAlpha">α of RPO (Pang et al. 2024; TRL's rpo_alpha): adds α times the chosen answer's mean
/// next-token cross-entropy to each pair's loss, which keeps DPO from lowering the chosen answers' likelihood along with
/// the rejected ones' (on small models that drift ends in degenerate text). 0: plain DPO.</param>
/// <param name="logitsPerChunk">how many logits one chunk of the loss holds (<see cref="FusedKernels.LogitsPerChunk"/>).</param>
public sealed class DpoLoss(double beta, DpoLossKind kind = DpoLossKind.Sigmoid, double labelSmoothing = 0, double rpoAlpha = 0,
    long logitsPerChunk = ChunkedCrossEntropy.DefaultLogitsPerChunk) : ITrainingLoss
{
    public double Beta => beta;

    public long Count(Batch batch) => batch.Rows;

    public Tensor Sum(LlamaForCausalLM model, Batch batch)
    {
        using var scope = NewDisposeScope();
        var (margins, chosenNll) = Pairs(model, batch);
        var losses = PairLosses(margins);
        if (rpoAlpha > 0) losses = losses + chosenNll * rpoAlpha;
        return losses.sum().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The loss of each pair from its margin m (TRL's dpo_loss): sigmoid -(1 - ε) log σ(βm) - ε log σ(-βm); hinge
    /// max(0, 1 - βm); IPO (m - 1/(2β))². At m = 0, where every pair starts, they are log 2, 1 and 1/(4β²).
    /// </summary>
    /// <param name="margins">(B) in any float dtype.</param>
    public Tensor PairLosses(Tensor margins) => kind switch
    {
        DpoLossKind.Hinge => nn.functional.relu(1 - beta * margins),
        DpoLossKind.Ipo => (margins - 1 / (2 * beta)).square(),
        _ => -nn.functional.logsigmoid(margins * beta) * (1 - labelSmoothing) - nn.functional.logsigmoid(margins * -beta) * labelSmoothing,
    };

    /// <summary>
    /// Each pair's (log π(chosen) - log π_ref(chosen)) - (log π(rejected) - log π_ref(rejected)), (B) fp32, attached to
    /// the graph when gradients are enabled (for IPO each log-probability is the mean over the answer's tokens). β times
    /// it is TRL's "rewards/margins"; a pair is ranked right when it is positive ("rewards/accuracies").
    /// </summary>
    public Tensor Margins(LlamaForCausalLM model, Batch batch)
    {
        using var scope = NewDisposeScope();
        var (margins, _) = Pairs(model, batch);
        return margins.MoveToOuterDisposeScope();
    }

    /// <summary>The margins, and each chosen answer's mean next-token cross-entropy under the policy (RPO's term), (B) each.</summary>
    (Tensor Margins, Tensor ChosenNll) Pairs(LlamaForCausalLM model, Batch batch)
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
        var tokens = AnswerTokens(batch, spans).to(ratios.device);                        // (B, 2)
        if (kind == DpoLossKind.Ipo) ratios = ratios / tokens;
        var margins = ratios.select(1, 0) - ratios.select(1, 1);                          // (B)
        var chosenNll = -policy.select(1, 0) / tokens.select(1, 0);                       // (B)
        return (margins.MoveToOuterDisposeScope(), chosenNll.MoveToOuterDisposeScope());
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

    /// <summary>How many answer tokens each conversation's log-probability sums, (B, 2) fp32.</summary>
    static Tensor AnswerTokens(Batch batch, (int Start, int Length)[,] spans)
    {
        var counts = new float[batch.Rows * 2];
        for (int r = 0; r < batch.Rows; r++)
            for (int d = 0; d < 2; d++)
            {
                var (start, length) = spans[r, d];
                // The span's first label never counts (nothing of this conversation precedes it), as in the loss.
                for (int i = start + 1; i < start + length; i++)
                    if (batch.Labels[r * batch.Length + i] != TokenizedExample.IgnoreIndex) counts[r * 2 + d]++;
            }
        return tensor(counts, [batch.Rows, 2]);
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
