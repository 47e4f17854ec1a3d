using QLoraNet.Formats;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// The calibration batch a calibrated format (GPTQ, AWQ, SmoothQuant) is made from: N samples of L token ids each,
/// (N, L) int64 on the CPU, every row a causal window starting at position 0 (no padding, no mask). Built by the
/// caller from its data (the CLI: QLoraNet.Training.Data.CalibrationSamples); checked against the model here.
/// </summary>
public sealed record CalibrationSet(Tensor Ids)
{
    public long Samples => Ids.shape[0];
    public long SequenceLength => Ids.shape[1];

    /// <summary>Checks the ids against <paramref name="arch"/>: 2-D int64, ids in [0, vocab), L within the context.</summary>
    public void Check(ModelArchitecture arch)
    {
        if (Ids.dim() != 2 || Ids.dtype != ScalarType.Int64 || Samples < 1 || SequenceLength < 2)
            throw new ArgumentException($"calibration ids must be (samples, length) int64 with length >= 2, got {Ids.dtype} [{string.Join(", ", Ids.shape)}]");
        if (SequenceLength > arch.MaxPositions)
            throw new ArgumentException($"--calibration-seq-len {SequenceLength} exceeds the model's max_position_embeddings {arch.MaxPositions}");
        using var low = Ids.min();
        using var high = Ids.max();
        if (low.item<long>() < 0 || high.item<long>() >= arch.VocabSize)
            throw new ArgumentException($"calibration token ids run from {low.item<long>()} to {high.item<long>()}; the model's vocabulary has {arch.VocabSize}");
    }
}
