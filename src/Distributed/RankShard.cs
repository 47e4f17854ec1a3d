namespace QLoraNet.Distributed;

/// <summary>
/// Which micro-batches of each optimizer step this rank trains on. The data order is one global sequence of
/// micro-batches, the same on every rank and for every world size (each rank builds it from the same seed); a
/// step consumes the next <see cref="MicroBatchesPerStep"/> = accumulation x world of them, and rank r trains on
/// the contiguous block r·A .. r·A + A - 1 of them. So the global batch is micro-batch size x accumulation x world,
/// a 2-rank run with accumulation A trains each step on exactly the sequences of a 1-rank run with accumulation 2A,
/// and contiguous blocks are subtrees of the step's summation tree (<see cref="PairwiseOrder"/>), so the two add
/// their gradients identically. The data position a checkpoint stores (in global micro-batches) means the same
/// for any world size: a run may resume on another world size when the global batch can be kept
/// (<see cref="AccumulationToResume"/>).
/// </summary>
/// <param name="Rank">this rank, 0..WorldSize-1</param>
/// <param name="WorldSize">ranks in the job</param>
/// <param name="AccumulationSteps">micro-batches each rank trains on per step (training.gradient_accumulation_steps)</param>
public sealed record RankShard(int Rank, int WorldSize, int AccumulationSteps)
{
    public int Rank { get; } = Rank >= 0 && Rank < WorldSize ? Rank : throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"rank must be in 0..{WorldSize - 1}");
    public int WorldSize { get; } = WorldSize >= 1 ? WorldSize : throw new ArgumentOutOfRangeException(nameof(WorldSize), WorldSize, "world size must be at least 1");
    public int AccumulationSteps { get; } = AccumulationSteps >= 1 ? AccumulationSteps : throw new ArgumentOutOfRangeException(nameof(AccumulationSteps), AccumulationSteps, "accumulation must be at least 1");

    /// <summary>Micro-batches one optimizer step consumes from the global sequence, all ranks together.</summary>
    public int MicroBatchesPerStep => AccumulationSteps * WorldSize;

    /// <summary>Sequences per optimizer step, all ranks together.</summary>
    public int GlobalBatchSize(int microBatchSize) => microBatchSize * MicroBatchesPerStep;

    /// <summary>Whether position <paramref name="indexInStep"/> (0..MicroBatchesPerStep-1) of a step is this rank's.</summary>
    public bool Owns(int indexInStep) => indexInStep / AccumulationSteps == Rank;

    /// <summary>This rank's positions within a step: Rank·A .. Rank·A + A - 1.</summary>
    public IEnumerable<int> Positions() => Enumerable.Range(Rank * AccumulationSteps, AccumulationSteps);

    /// <summary>This rank's micro-batches out of one step's global micro-batches (all ranks', in order).</summary>
    public IReadOnlyList<T> Take<T>(IReadOnlyList<T> stepMicroBatches)
    {
        if (stepMicroBatches.Count != MicroBatchesPerStep)
            throw new ArgumentException($"a step has {MicroBatchesPerStep} micro-batches (accumulation {AccumulationSteps} x world {WorldSize}), got {stepMicroBatches.Count}", nameof(stepMicroBatches));
        return Positions().Select(i => stepMicroBatches[i]).ToList();
    }

    /// <summary>
    /// The accumulation with which this rank continues a checkpoint written by a run of
    /// <paramref name="savedWorldSize"/> ranks with (<paramref name="savedMicroBatchSize"/>,
    /// <paramref name="savedAccumulation"/>): on the same world size, this shard's own (the config rules, as on one
    /// GPU); on another, the one that keeps the checkpoint's global batch, so that step boundaries, the
    /// learning-rate schedule and the data position mean what they meant. Throws a one-line
    /// <see cref="InvalidOperationException"/> when the global batch cannot be kept.
    /// </summary>
    public int AccumulationToResume(int savedMicroBatchSize, int savedAccumulation, int savedWorldSize, int microBatchSize)
    {
        if (savedWorldSize == WorldSize) return AccumulationSteps;
        int savedPerStep = savedAccumulation * savedWorldSize;
        string saved = $"{savedMicroBatchSize} x {savedAccumulation} x {savedWorldSize} (micro-batch x accumulation x world) = {savedMicroBatchSize * savedPerStep} sequences per step";
        if (savedMicroBatchSize != microBatchSize)
            throw new InvalidOperationException($"the checkpoint's global batch is {saved}; this run has micro_batch_size {microBatchSize}: set training.micro_batch_size={savedMicroBatchSize} to resume on {Ranks(WorldSize)}");
        if (savedPerStep % WorldSize != 0)
            throw new InvalidOperationException($"the checkpoint's global batch is {saved}: its {savedPerStep} micro-batches per step cannot be split over {Ranks(WorldSize)}; resume on a world size that divides {savedPerStep}");
        return savedPerStep / WorldSize;
    }

    static string Ranks(int n) => n == 1 ? "1 rank" : $"{n} ranks";
}
