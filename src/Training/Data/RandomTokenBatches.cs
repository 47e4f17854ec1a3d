namespace QLoraNet.Training.Data;

/// <summary>
/// Micro-batches of uniformly random token ids with labels equal to the inputs, every position trained, one example
/// per row: the data of a speed benchmark (the peer benchmark's random batches), where the values do not matter and
/// the shapes do. Ids come from <see cref="Pcg32"/> with the given seed.
/// </summary>
public sealed class RandomTokenBatches(int vocabSize, int rows, int length, ulong seed = 0) : IBatchSource
{
    readonly Pcg32 _random = new(seed, 0);

    public Batch Next()
    {
        var ids = new long[rows * length];
        var positions = new long[rows * length];
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = _random.NextBelow(vocabSize);
            positions[i] = i % length;
        }
        var documents = new long[rows * length];
        Array.Fill(documents, 1L);
        return new Batch(rows, length, ids, (long[])ids.Clone(), positions, documents);
    }
}
