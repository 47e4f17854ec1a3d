using QLoraNet.Distributed;
using QLoraNet.Kernels;
using QLoraNet.Models;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Optim;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>The numbers of a step: accumulation, clipping, and the seed that dropout masks derive from.</summary>
/// <param name="GradientAccumulationSteps">micro-batches per optimizer step and replica (the global batch is this x replicas).</param>
/// <param name="MaxGradNorm">clip the global gradient norm to this; 0 = measure only.</param>
/// <param name="Seed">the run's seed: micro-batch i of step s draws its dropout masks from a stream seeded by (seed, s, i).</param>
public sealed record TrainStepSettings(int GradientAccumulationSteps, double MaxGradNorm, long Seed);

/// <summary>What one optimizer step did. <see cref="Loss"/> is the mean over the step's loss terms (trained tokens)
/// and <see cref="GradNorm"/> the global gradient norm before clipping; when either is not finite the optimizer did
/// not step (<see cref="Applied"/>: this replica's update; replicas agree unless only one replica's loss was not
/// finite while the summed gradients were).</summary>
public sealed record StepOutcome(double Loss, double GradNorm, long InputTokens, long LossTerms)
{
    public bool Applied { get; init; } = true;

    public bool IsFinite => double.IsFinite(Loss) && double.IsFinite(GradNorm);
}

/// <summary>
/// One optimizer step, the unit that `train` loops over and `bench train` times: draw the step's micro-batches
/// (all replicas' share, so every replica's data position advances alike) and keep this replica's contiguous block
/// (<see cref="RankShard"/>); for each (in its own dispose scope), reseed the dropout stream from (seed, step,
/// micro-batch), run the loss (forward included) and back-propagate its share of the step's mean, release the
/// model's backward handles and take the gradient into the step's sum (<see cref="GradientAccumulator"/>); sum the
/// gradients over replicas (once per optimizer step); AdamW, which skips a non-finite step and clips on the global
/// norm where the values are (on the GPU: no wait for the device, <see cref="StepInFlight"/>); zero the gradients. The
/// gradients live in the run's <see cref="FlatGradients"/> (each parameter's .grad a view of one buffer), so each of
/// those is a kernel (or collective) per buffer, not per parameter; dispose the step at the end of the run.
/// The loss is injected (<see cref="ITrainingLoss"/>), and so are the replicas (<see cref="IReplicaGroup"/>):
/// a new objective or data-parallel training changes what is passed in, not this class.
/// Every replica divides by the token count of the whole global step, so the replicas' sum is the gradient of the
/// global mean; sums of gradients and of losses follow one tree (<see cref="PairwiseOrder"/>), so W replicas x A
/// micro-batches compute bit for bit what one replica x W·A computes (W a power of two, or A = 1). Masks that depend
/// only on (seed, step, micro-batch) make a resumed run draw exactly what the uninterrupted one did, with no random
/// state in the checkpoint, and make replicas draw what one replica draws.
/// </summary>
public sealed class TrainStep : IDisposable
{
    readonly LlamaForCausalLM _model;
    readonly AdamW _optimizer;
    readonly ITrainingLoss _loss;
    readonly TrainStepSettings _settings;
    readonly RandomStream? _dropoutRandom;
    readonly IReplicaGroup _replicas;
    readonly RankShard _shard;
    readonly IReadOnlyList<(string Name, Parameter Param)> _trainable;
    readonly FlatGradients _gradients;
    IStepPhaseMarker? _phases;
    StepInFlight? _previous;   // the last launched step, until the next launch has read it

    /// <param name="model">the model; its parameters that require grad are the ones <paramref name="optimizer"/> updates.</param>
    /// <param name="dropoutRandom">the stream the model's dropout draws from (null: the model draws no random numbers).</param>
    /// <param name="replicas">null = a single device.</param>
    public TrainStep(LlamaForCausalLM model, AdamW optimizer, ITrainingLoss loss, TrainStepSettings settings,
        RandomStream? dropoutRandom = null, IReplicaGroup? replicas = null)
    {
        if (settings.GradientAccumulationSteps < 1)
            throw new ArgumentException($"gradient accumulation steps must be at least 1, got {settings.GradientAccumulationSteps}");
        _model = model;
        _optimizer = optimizer;
        _loss = loss;
        _settings = settings;
        _dropoutRandom = dropoutRandom;
        _replicas = replicas ?? SingleReplica.Instance;
        _shard = new RankShard(_replicas.Rank, _replicas.Size, settings.GradientAccumulationSteps);
        _trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        _gradients = new FlatGradients(_trainable);
    }

    /// <summary>Receives the step's phase boundaries (`bench train --profile`); null = none. Set on the model's backward
    /// handles as well, where checkpointed layers mark their recomputation.</summary>
    public IStepPhaseMarker? Phases
    {
        get => _phases;
        set
        {
            _phases = value;
            _model.BackwardHandles.PhaseMarker = value;
        }
    }

    /// <summary>Runs optimizer step <paramref name="step"/> (0-based) at <paramref name="learningRate"/> on the next
    /// micro-batches of <paramref name="batches"/> and waits for its outcome.</summary>
    public StepOutcome Run(int step, double learningRate, IBatchSource batches) => Launch(step, learningRate, batches).Outcome;

    /// <summary>Launches optimizer step <paramref name="step"/> (0-based) at <paramref name="learningRate"/> on the next
    /// micro-batches of <paramref name="batches"/>, without waiting for the device: read its outcome after launching
    /// the next step (<see cref="StepInFlight"/>) and the GPU never idles between steps.</summary>
    public StepInFlight Launch(int step, double learningRate, IBatchSource batches)
    {
        using var scope = torch.NewDisposeScope();
        if (!_model.training) _model.train();
        _optimizer.LearningRate = learningRate;

        var (mine, stepTerms, tokens) = DealMicroBatches(batches);
        // Whatever ran between steps (an evaluation runs no backward, but a caller might) leaves nothing behind.
        _gradients.Zero();
        // The step's mean divides by the terms of all its micro-batches on all replicas (at least 1: a step of
        // fully masked rows has loss 0, not NaN).
        double terms = Math.Max(1, stepTerms);
        var gradients = new GradientAccumulator(_gradients, mine.Count);
        // Each micro-batch's loss sum stays on the device: reading it here would make the host wait for every
        // backward and leave the GPU idle while it issues the next micro-batch.
        var lossSums = new Tensor[mine.Count];
        for (int k = 0; k < mine.Count; k++)
        {
            var (index, batch) = mine[k];
            using var microScope = torch.NewDisposeScope();
            _dropoutRandom?.Reseed(MicroBatchSeed(_settings.Seed, step, index));
            _phases?.Enter(StepPhase.Forward);
            var sum = _loss.Sum(_model, batch);
            _phases?.Enter(StepPhase.Backward);
            BackwardFailure.Backward(sum / terms);
            _model.BackwardHandles.Release();
            gradients.TakeMicroBatch();
            lossSums[k] = sum.detach().to(ScalarType.Float32).MoveToOuterDisposeScope();
        }
        _phases?.Enter(StepPhase.Optimizer);
        // One collective per gradient buffer, in place (FlatGradients: nothing to pack or unpack).
        var grads = gradients.Finish();
        _replicas.SumInPlace(grads);
        // The step's results stay on the device: (micro-batches + 1) fp32, the loss sums then the global norm. The
        // update reads them there (skips a non-finite step, clips to the norm), so nothing waits for the GPU here.
        Tensor stats;
        using (var norm = _gradients.Norm())
        using (var normThere = norm.to(lossSums[0].device))    // the same handle's storage when they share a device
            stats = torch.stack([.. lossSums, normThere]);
        // The previous step finished on the device before this one's forward began, so its values are on the host
        // without a wait: a step the device skipped leaves the count before this update's bias corrections use it.
        _previous?.Settle();
        var result = _optimizer.StepOnce(new MultiTensorAdamW.Guard(stats, _settings.MaxGradNorm));
        _gradients.Zero();
        _phases?.Enter(StepPhase.Done);
        _previous = new StepInFlight(step, stats, mine.Count, terms, tokens, _replicas,
            result == MultiTensorAdamW.Result.DecidedOnDevice ? _optimizer.Retract : null);
        return _previous;
    }

    /// <summary>Reads the last launched step (its pinned copy and event are released) and releases the run's gradient
    /// buffers (every trainable parameter's .grad becomes undefined).</summary>
    public void Dispose()
    {
        try
        {
            _previous?.Settle();
        }
        finally
        {
            _previous = null;
            _gradients.Dispose();
        }
    }

    /// <summary>
    /// Draws the step's micro-batches for all replicas (so every replica's data position advances alike) and keeps
    /// this replica's block, with each one's index in the step (which seeds its dropout). Every replica draws the
    /// same micro-batches (the same data, position and order: what <see cref="RankShard"/> relies on), so the
    /// step's loss terms and input tokens over all replicas are counted here, from the host-side batches, with no
    /// collective: a collective at the step's start would make the host wait for the previous step's optimizer on
    /// the device instead of queueing the forward behind it. (Integer counts: exact in a double up to 2^53.)
    /// </summary>
    (List<(int Index, Batch Batch)> Mine, double Terms, long InputTokens) DealMicroBatches(IBatchSource batches)
    {
        var mine = new List<(int, Batch)>();
        double terms = 0;
        long tokens = 0;
        for (int i = 0; i < _shard.MicroBatchesPerStep; i++)
        {
            var batch = batches.Next();
            terms += _loss.Count(batch);
            tokens += (long)batch.Rows * batch.Length;
            if (_shard.Owns(i)) mine.Add((i, batch));
        }
        return (mine, terms, tokens);
    }

    /// <summary>A seed from (seed, step, micro-batch), mixed with SplitMix64's finalizer (Steele et al. 2014) so that
    /// nearby triples give unrelated streams.</summary>
    public static long MicroBatchSeed(long seed, int step, int microBatch)
    {
        ulong z = (ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step * 0xD1B54A32D192ED03UL + (ulong)microBatch + 1;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (long)(z >> 1);
    }
}
