namespace QLoraNet.Models;

/// <summary>
/// A module whose training forward draws random numbers (dropout masks) from an explicit <see cref="RandomStream"/>
/// rather than torch's process-wide generators. <see cref="LayerCheckpoint"/> finds these in a layer and saves and
/// restores their streams around the recomputation, so the recomputed forward draws exactly what the first did.
/// </summary>
public interface IStochasticModule
{
    /// <summary>The stream the module draws from.</summary>
    RandomStream Random { get; }
}
