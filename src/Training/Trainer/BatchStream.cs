using QLoraNet.Training.Data;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Micro-batches across epochs, from a position (epoch, micro-batch): each epoch visits the training sequences in
/// that epoch's seeded permutation (<see cref="TrainingData.TrainBatches"/>), then the next epoch begins. The
/// position is what a checkpoint stores to resume the data exactly.
/// </summary>
public sealed class BatchStream(TrainingData data, int microBatchSize, int epoch, int microBatch) : IBatchSource
{
    IEnumerator<Batch>? _current;

    public int Epoch { get; private set; } = epoch;
    public int MicroBatch { get; private set; } = microBatch;
    public int PerEpoch { get; } = data.MicroBatchesPerEpoch(microBatchSize);

    /// <summary>Epochs done, fractional.</summary>
    public double Progress => Epoch + (double)MicroBatch / PerEpoch;

    public Batch Next()
    {
        if (MicroBatch >= PerEpoch)
        {
            Epoch++;
            MicroBatch = 0;
            _current?.Dispose();
            _current = null;
        }
        _current ??= data.TrainBatches(Epoch, microBatchSize, MicroBatch).GetEnumerator();
        if (!_current.MoveNext()) throw new InvalidOperationException($"epoch {Epoch} ended before micro-batch {MicroBatch} of {PerEpoch}");
        MicroBatch++;
        return _current.Current;
    }
}
