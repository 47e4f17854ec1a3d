namespace QLoraNet.Training.Data;

/// <summary>
/// One row of a batch before padding: one or more examples laid end to end. <see cref="PositionIds"/> restart at
/// 0 for each example (so RoPE sees every example as if it were alone) and <see cref="DocumentIds"/> number the
/// examples 1, 2, ... (0 is reserved for padding), from which the block-diagonal causal mask is built.
/// </summary>
public sealed record PackedSequence(int[] InputIds, int[] Labels, int[] PositionIds, int[] DocumentIds)
{
    public int Length => InputIds.Length;

    public int Documents => DocumentIds.Length == 0 ? 0 : DocumentIds[^1];

    public static PackedSequence Of(IReadOnlyList<TokenizedExample> examples)
    {
        int n = examples.Sum(e => e.Length);
        var ids = new int[n];
        var labels = new int[n];
        var pos = new int[n];
        var doc = new int[n];
        int at = 0;
        for (int d = 0; d < examples.Count; d++)
        {
            var e = examples[d];
            e.InputIds.CopyTo(ids, at);
            e.Labels.CopyTo(labels, at);
            for (int i = 0; i < e.Length; i++)
            {
                pos[at + i] = i;
                doc[at + i] = d + 1;
            }
            at += e.Length;
        }
        return new PackedSequence(ids, labels, pos, doc);
    }
}
