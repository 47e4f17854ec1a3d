namespace QLoraNet.Quant;

/// <summary>
/// A module wrapping a frozen linear that, for now, computes exactly that linear and nothing else (a LoRA adapter
/// that is disabled): whoever would treat a bare frozen linear specially (the decoder layer's residual add inside the
/// down projection's GEMM, <see cref="ResidualProduct"/>) treats it as that linear, so disabling adapters gives the
/// base model's values bit for bit.
/// </summary>
public interface IBareFrozenLinear
{
    /// <summary>The frozen linear computed as it is, or null while the wrapper adds anything to it.</summary>
    FrozenLinear? BareLinear { get; }
}
