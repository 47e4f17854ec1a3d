using QLoraNet.Models;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Validation: the loss's mean over a set of batches (sum of the batches' sums over the sum of their terms, the same
/// mean a training step takes), in eval mode (no dropout) and without a graph. The model is put back in the mode
/// it was in. Sharded over the replicas of a data-parallel run: replica r evaluates batches r, r + W, ...; one
/// float64 all-reduce of the per-batch (sum, terms) pairs, where every entry is one replica's value plus zeros, gives
/// every replica all of them exactly, and each adds them in batch order: the mean is bit for bit the one-process
/// mean, at 1/W of its time.
/// </summary>
public sealed class Evaluator(LlamaForCausalLM model, ITrainingLoss loss, IReplicaGroup? replicas = null)
{
    readonly IReplicaGroup _replicas = replicas ?? SingleReplica.Instance;

    /// <summary>The mean loss over <paramref name="batches"/> (the same on every replica); NaN when they hold no terms.</summary>
    public double MeanLoss(IEnumerable<Batch> batches)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            var perBatch = new List<(double Sum, long Terms)>();
            int count = 0;
            foreach (var batch in batches)
            {
                if (count++ % _replicas.Size != _replicas.Rank)
                {
                    perBatch.Add((0, 0));
                    continue;
                }
                using var scope = torch.NewDisposeScope();
                perBatch.Add((loss.Sum(model, batch).item<float>(), loss.Count(batch)));
            }
            if (_replicas.Size > 1) perBatch = Gather(perBatch);
            double sum = 0;
            long terms = 0;
            foreach (var (s, t) in perBatch)
            {
                sum += s;
                terms += t;
            }
            return terms == 0 ? double.NaN : sum / terms;
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>Every replica's entries: each batch's pair is nonzero on one replica only, so the sum is exact.</summary>
    List<(double Sum, long Terms)> Gather(List<(double Sum, long Terms)> mine)
    {
        using var scope = torch.NewDisposeScope();
        var flat = mine.SelectMany(e => new[] { e.Sum, e.Terms }).ToArray();
        var t = flat.Length == 0 ? torch.zeros(1, ScalarType.Float64) : torch.tensor(flat, ScalarType.Float64);
        if (_replicas.Device is { } device) t = t.to(device);
        _replicas.SumInPlace([t]);
        var all = t.cpu().data<double>().ToArray();
        return Enumerable.Range(0, mine.Count).Select(i => (all[2 * i], (long)all[2 * i + 1])).ToList();
    }
}
