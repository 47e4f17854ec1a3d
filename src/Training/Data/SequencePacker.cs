namespace QLoraNet.Training.Data;

/// <summary>
/// Packs short examples into sequences of at most <c>maxSeqLen</c> tokens, greedy first-fit in the given order:
/// each example goes into the first open sequence with room for it, else starts a new one. Examples are never split
/// (each is already at most <c>maxSeqLen</c> after truncation). With packing off every example is its own sequence.
/// Packing changes the number of rows per step, not what each example can see: see <see cref="Batch.ToTensors"/>.
/// </summary>
public static class SequencePacker
{
    public static IReadOnlyList<PackedSequence> Pack(IReadOnlyList<TokenizedExample> examples, int maxSeqLen, bool packing)
    {
        if (!packing) return examples.Select(e => PackedSequence.Of([e])).ToArray();
        var bins = new List<List<TokenizedExample>>();
        var used = new List<int>();
        foreach (var e in examples)
        {
            int b = used.FindIndex(u => u + e.Length <= maxSeqLen);
            if (b < 0)
            {
                bins.Add([]);
                used.Add(0);
                b = bins.Count - 1;
            }
            bins[b].Add(e);
            used[b] += e.Length;
        }
        return bins.Select(PackedSequence.Of).ToArray();
    }
}
