using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Data;

/// <summary>
/// A micro-batch as flat row-major arrays of shape (Rows, Length): sequences right-padded with the pad id to the
/// longest row, labels -100 and document id 0 at padding. <see cref="ToTensors"/> makes the model's inputs.
/// </summary>
public sealed record Batch(int Rows, int Length, long[] InputIds, long[] Labels, long[] PositionIds, long[] DocumentIds)
{
    public static Batch Collate(IReadOnlyList<PackedSequence> rows, int padId)
    {
        if (rows.Count == 0) throw new ArgumentException("a batch needs at least one sequence", nameof(rows));
        int t = rows.Max(r => r.Length);
        int b = rows.Count;
        var ids = new long[b * t];
        var labels = new long[b * t];
        var pos = new long[b * t];
        var doc = new long[b * t];
        Array.Fill(ids, padId);
        Array.Fill(labels, TokenizedExample.IgnoreIndex);
        for (int r = 0; r < b; r++)
        {
            var s = rows[r];
            for (int i = 0; i < s.Length; i++)
            {
                ids[r * t + i] = s.InputIds[i];
                labels[r * t + i] = s.Labels[i];
                pos[r * t + i] = s.PositionIds[i];
                doc[r * t + i] = s.DocumentIds[i];
            }
        }
        return new Batch(b, t, ids, labels, pos, doc);
    }

    /// <summary>Tokens that count in the loss (labels other than -100).</summary>
    public int TrainedTokens => Labels.Count(l => l != TokenizedExample.IgnoreIndex);

    /// <summary>Whether any row holds more than one example, i.e. the plain causal mask is not enough.</summary>
    public bool IsPacked => DocumentIds.Any(d => d > 1);

    /// <summary>
    /// The attention mask, shape (Rows, 1, Length, Length) row-major, true where query i may attend to key j:
    /// j &lt;= i and both in the same example (block-diagonal causal, so packed examples never see each other).
    /// A padding query attends to itself only: a row with no allowed key would make softmax NaN, and its outputs
    /// are ignored by the loss anyway.
    /// </summary>
    public bool[] AttentionMask()
    {
        int t = Length;
        var mask = new bool[Rows * t * t];
        for (int r = 0; r < Rows; r++)
        {
            int row = r * t;
            for (int i = 0; i < t; i++)
            {
                long di = DocumentIds[row + i];
                int q = (r * t + i) * t;
                if (di == 0) { mask[q + i] = true; continue; }
                for (int j = i; j >= 0 && DocumentIds[row + j] == di; j--) mask[q + j] = true;
            }
        }
        return mask;
    }

    /// <summary>
    /// The batch as tensors on <paramref name="device"/>: input_ids, labels and position_ids (B, T) int64, and the
    /// attention mask (B, 1, T, T) bool (true = attend), which broadcasts over heads in scaled dot-product attention.
    /// </summary>
    public BatchTensors ToTensors(Device device)
    {
        long[] shape = [Rows, Length];
        return new BatchTensors(
            On(device, tensor(InputIds, shape)),
            On(device, tensor(Labels, shape)),
            On(device, tensor(PositionIds, shape)),
            On(device, tensor(AttentionMask(), [Rows, 1, Length, Length])));
    }

    static Tensor On(Device device, Tensor cpu)
    {
        if (device.type == DeviceType.CPU) return cpu;
        using (cpu) return cpu.to(device);
    }
}
