namespace QLoraNet.Distributed;

/// <summary>
/// Which micro-batches of each optimizer step this rank trains on. The data order is one global sequence of
/// micro-batches, the same on every rank and for every world size (each rank builds it from the same seed); a
/// step consumes the next <see cref="MicroBatchesPerStep"/> = accumulation x world of them, and rank r trains on
/// those at positions r, r + W, r + 2W, ... within the step. So the global batch is micro-batch size x
/// accumulation x world, a 2-rank run with accumulation A trains each step on exactly the sequences of a 1-rank
/// run with accumulation 2A, and the data position a checkpoint stores (in global micro-batches) means the same
/// for any world size: a run may resume on another world size when the global batch stays the same
/// (<see cref="ResumeProblem"/>).
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
    public bool Owns(int indexInStep) => indexInStep % WorldSize == Rank;

    /// <summary>This rank's positions within a step: Rank, Rank + W, ...</summary>
    public IEnumerable<int> Positions() => Enumerable.Range(0, AccumulationSteps).Select(i => Rank + i * WorldSize);

    /// <summary>This rank's micro-batches out of one step's global micro-batches (all ranks', in order).</summary>
    public IReadOnlyList<T> Take<T>(IReadOnlyList<T> stepMicroBatches)
    {
        if (stepMicroBatches.Count != MicroBatchesPerStep)
            throw new ArgumentException($"a step has {MicroBatchesPerStep} micro-batches (accumulation {AccumulationSteps} x world {WorldSize}), got {stepMicroBatches.Count}", nameof(stepMicroBatches));
        return Positions().Select(i => stepMicroBatches[i]).ToList();
    }

    /// <summary>Optimizer steps over <paramref name="microBatches"/> global micro-batches, the last one possibly partial.</summary>
    public int Steps(long microBatches) => (int)((microBatches + MicroBatchesPerStep - 1) / MicroBatchesPerStep);

    /// <summary>
    /// Null when a checkpoint written with (micro, accumulation, world) = saved can continue with this shard and
    /// <paramref name="microBatchSize"/>; else a one-line reason with the accumulation that would make it work.
    /// The condition: the same micro-batch size (the global sequence of micro-batches is built from it) and the same
    /// micro-batches per step (accumulation x world), so step boundaries, the schedule and the data position mean
    /// the same.
    /// </summary>
    public string? ResumeProblem(int savedMicroBatchSize, int savedAccumulation, int savedWorldSize, int microBatchSize)
    {
        int savedPerStep = savedAccumulation * savedWorldSize;
        string saved = $"{savedMicroBatchSize} x {savedAccumulation} x {savedWorldSize} (micro-batch x accumulation x world)";
        string now = $"{microBatchSize} x {AccumulationSteps} x {WorldSize}";
        if (savedMicroBatchSize != microBatchSize)
            return $"the checkpoint was trained with micro_batch_size {savedMicroBatchSize}, this run has {microBatchSize}: set training.micro_batch_size={savedMicroBatchSize} to resume";
        if (savedPerStep == MicroBatchesPerStep) return null;
        string fix = savedPerStep % WorldSize == 0
            ? $"set training.gradient_accumulation_steps={savedPerStep / WorldSize} to keep the global batch on {WorldSize} rank{(WorldSize > 1 ? "s" : "")}"
            : $"the global batch {savedPerStep} micro-batches cannot be split over {WorldSize} ranks; resume on a world size that divides {savedPerStep}";
        return $"the checkpoint's global batch is {saved} = {savedMicroBatchSize * savedPerStep} sequences per step, this run's is {now} = {microBatchSize * MicroBatchesPerStep}: {fix}";
    }
}
