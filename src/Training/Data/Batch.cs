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

    /// <summary>Whether any row holds more than one example, i.e. the plain causal mask is not enough.</summary>
    public bool IsPacked => DocumentIds.Any(d => d > 1);

    /// <summary>
    /// The batch as tensors on <paramref name="device"/>: input_ids, labels and position_ids (B, T) int64, and, for a
    /// packed batch (<see cref="IsPacked"/>), the attention mask (B, 1, T, T) bool, true where query i may attend to
    /// key j: j &lt;= i within the same example (block-diagonal causal,
    /// <see cref="QLoraNet.Models.AttentionMask.BlockCausal"/>), so packed examples never see each other. Padding
    /// (document 0) sees only padding, which keeps every row of the softmax non-empty; its outputs are ignored by the
    /// loss. An unpacked batch gets no mask: the model's plain causal attention is the same for every real token.
    /// </summary>
    public BatchTensors ToTensors(Device device)
    {
        long[] shape = [Rows, Length];
        Tensor? mask = null;
        if (IsPacked)
        {
            using var documents = On(device, tensor(DocumentIds, shape));
            mask = QLoraNet.Models.AttentionMask.BlockCausal(documents);
        }
        return new BatchTensors(
            On(device, tensor(InputIds, shape)),
            On(device, tensor(Labels, shape)),
            On(device, tensor(PositionIds, shape)),
            mask);
    }

    /// <summary>The host tensor on <paramref name="device"/>. To a GPU through pinned memory, without waiting: from
    /// pageable memory the copy would wait for all the work queued before it (libtorch's stream is the legacy default
    /// stream), so the host, ahead of the GPU by the previous step (Trainer.StepInFlight), would stop at every
    /// step's first batch until the GPU had drained its queue. libtorch's pinned-memory cache keeps the staging block
    /// until the copy has run.</summary>
    static Tensor On(Device device, Tensor cpu)
    {
        if (device.type == DeviceType.CPU) return cpu;
        using (cpu)
        {
            if (device.type != DeviceType.CUDA) return cpu.to(device);
            using var pinned = cpu.pin_memory();
            return pinned.to(device, non_blocking: true);
        }
    }
}
