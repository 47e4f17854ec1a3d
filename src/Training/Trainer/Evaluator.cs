using QLoraNet.Models;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using TorchSharp;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Validation: the loss's mean over a set of batches (sum of the batches' sums over the sum of their terms, the same
/// mean a training step takes), in eval mode (no dropout) and without a graph. The model is put back in the mode
/// it was in.
/// </summary>
public sealed class Evaluator(LlamaForCausalLM model, ITrainingLoss loss)
{
    /// <summary>The mean loss over <paramref name="batches"/>; NaN when they hold no terms.</summary>
    public double MeanLoss(IEnumerable<Batch> batches)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            double sum = 0;
            long terms = 0;
            foreach (var batch in batches)
            {
                using var scope = torch.NewDisposeScope();
                sum += loss.Sum(model, batch).item<float>();
                terms += loss.Count(batch);
            }
            return terms == 0 ? double.NaN : sum / terms;
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
