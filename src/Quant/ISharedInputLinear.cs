using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A linear that may run together with other linears reading the same input, sharing work on it: LoRA adapters with
/// no dropout on one input (the attention's q/k/v) make their down projections one GEMM (Peft.SharedLoraDown).
/// Models.LinearSlots asks the first member for the whole group; null means the members cannot share now (a disabled
/// adapter, dropout, a graph needed, another kind of linear among them), and each then runs on its own.
/// </summary>
public interface ISharedInputLinear
{
    /// <summary>forward(x) of every member without an autograd graph, or null (see the type's summary).</summary>
    /// <param name="members">the linears reading <paramref name="x"/>, this one first.</param>
    /// <param name="x">(..., in)</param>
    /// <returns>(..., outᵢ) per member, as each one's forward would give it.</returns>
    Tensor[]? ForwardShared(IReadOnlyList<ISharedInputLinear> members, Tensor x);

    /// <summary>Every member's <see cref="ITapedLinear.Record"/> of <paramref name="x"/> (with its product), as one
    /// group whose backward shares the work too, or null (see the type's summary).</summary>
    /// <param name="members">the linears reading <paramref name="x"/>, this one first.</param>
    /// <param name="x">(..., in) in the compute dtype.</param>
    LinearTapeGroup? RecordShared(IReadOnlyList<ISharedInputLinear> members, Tensor x, bool keepWeight);
}
