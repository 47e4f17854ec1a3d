namespace QLoraNet.Kernels;

/// <summary>
/// A module whose backward returns gradient handles through a custom autograd function (a frozen linear, LoRA's
/// fused dropout): it starts with a <see cref="BackwardHandles"/> queue of its own, and the model it is assembled
/// into points it at the model's one queue, which whoever runs backward on the model releases.
/// </summary>
public interface IDefersBackwardHandles
{
    /// <summary>Makes backward defer into <paramref name="owner"/> (the queue of the model this module belongs to).</summary>
    void DeferBackwardHandlesTo(BackwardHandles owner);
}
