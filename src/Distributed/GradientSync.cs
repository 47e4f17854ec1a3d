using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>How <see cref="GradientSync"/> combines the ranks' gradients.</summary>
public enum GradientReduction
{
    /// <summary>g = sum over ranks. Right when every rank divided its loss by the token count of the whole global
    /// step (all ranks' micro-batches): the sum is then exactly the one-process gradient of the global mean loss.</summary>
    Sum,

    /// <summary>g = (sum over ranks) / world size. Right when each rank divided its loss by its own token count
    /// (torch DDP's convention).</summary>
    Mean,
}

/// <summary>
/// Once per optimizer step, after the last micro-batch's backward and before clipping: all-reduces the trainable
/// parameters' gradients (bucketed) so that every rank holds the global gradient. Clipping then measures the
/// global norm and AdamW applies the same update on every rank, so the replicas stay identical without ever
/// sending parameters. Parameters keep one order on every rank (the model's named_parameters order is).
/// </summary>
public sealed class GradientSync
{
    readonly ICollectives _collectives;
    readonly IReadOnlyList<(string Name, Tensor Param)> _parameters;
    readonly GradientReduction _reduction;

    public GradientSync(ICollectives collectives, IEnumerable<(string Name, Tensor Param)> parameters, GradientReduction reduction)
    {
        _collectives = collectives;
        _parameters = parameters.ToList();
        _reduction = reduction;
    }

    /// <summary>Makes every parameter's .grad the reduction over ranks, in place. A parameter without a gradient
    /// on this rank is an error naming it (the ranks would disagree on what they send).</summary>
    public void Reduce()
    {
        if (_collectives.WorldSize == 1) return;
        var grads = new List<Tensor>(_parameters.Count);
        foreach (var (name, p) in _parameters)
            grads.Add(p.grad ?? throw new CollectiveException(_collectives.Rank, "gradient sync",
                $"parameter '{name}' has no gradient on this rank; every rank must backpropagate into every trainable parameter before the sync"));
        _collectives.AllReduceSum(grads);
        if (_reduction == GradientReduction.Mean)
        {
            using var noGrad = no_grad();
            foreach (var g in grads) g.div_(_collectives.WorldSize);
        }
    }

    /// <summary>Makes every rank's parameters rank 0's (at start and after loading a checkpoint), so replicas start
    /// identical even if their initialisation drew different random numbers.</summary>
    public void BroadcastParameters() => _collectives.Broadcast(_parameters.Select(p => p.Param).ToList());
}
