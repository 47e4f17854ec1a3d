using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// A module whose training forward draws random numbers (dropout masks) from an explicit generator rather than
/// torch's process-wide one. <see cref="LayerCheckpoint"/> finds these in a layer and saves and restores their
/// generators around the recomputation, so the recomputed forward draws exactly what the first forward drew.
/// </summary>
public interface IStochasticModule
{
    /// <summary>The generator the module draws from (on the device of its inputs).</summary>
    Generator Generator { get; }
}
