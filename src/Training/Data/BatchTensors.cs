using static TorchSharp.torch;

namespace QLoraNet.Training.Data;

/// <summary>The tensors of a <see cref="Batch"/>; dispose them (or create them inside the step's dispose scope).
/// <see cref="AttentionMask"/> is null for an unpacked batch (plain causal attention).</summary>
public sealed record BatchTensors(Tensor InputIds, Tensor Labels, Tensor PositionIds, Tensor? AttentionMask) : IDisposable
{
    public void Dispose()
    {
        InputIds.Dispose();
        Labels.Dispose();
        PositionIds.Dispose();
        AttentionMask?.Dispose();
    }
}
