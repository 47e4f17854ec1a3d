namespace QLoraNet.Training.Data;

/// <summary>
/// An endless supply of training micro-batches, drawn one at a time by the step: the dataset's epochs in their
/// seeded order (<see cref="QLoraNet.Training.Trainer.BatchStream"/>) for `train`, random tokens
/// (<see cref="RandomTokenBatches"/>) for `bench train`.
/// </summary>
public interface IBatchSource
{
    Batch Next();
}
