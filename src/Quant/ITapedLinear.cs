using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A linear that can run its forward on a <see cref="LinearTape"/> for a backward written out by hand: frozen
/// linears (<see cref="FrozenLinear"/>) and the adapters over them (Peft.LoraLinear). A decoder layer whose linears
/// all have it can skip autograd in its recomputation (Models.ExplicitLayerBackward).
/// </summary>
public interface ITapedLinear
{
    /// <summary>The dtype the linear computes in (its input's, on a tape).</summary>
    ScalarType ComputeDType { get; }

    /// <summary>Whether <see cref="Record"/> can stand in for autograd through this linear.</summary>
    bool SupportsTape { get; }

    /// <summary>forward(x) without autograd, keeping what backward needs (<see cref="FrozenLinear.Record"/> says
    /// what <paramref name="keepWeight"/> and <paramref name="product"/> do).</summary>
    /// <param name="x">(..., in) in the compute dtype.</param>
    LinearTape Record(Tensor x, bool keepWeight, bool product = true);
}
