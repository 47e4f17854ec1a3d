using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The tapes of linears that read one input (the attention's q/k/v on its normed hidden states), recorded together
/// (<see cref="ISharedInputLinear.RecordShared"/>), with one backward for all: dL/dx = Σᵢ dyᵢ ∂yᵢ/∂x. One call with
/// every member's dy lets linears that share work on the input in forward share it in backward too
/// (Peft.SharedLoraDownTape); this base has nothing shared and runs each member's own backward in turn.
/// Member i's output is <c>Members[i].Output</c>. The group owns its members: dispose it once its backward has run.
/// </summary>
public class LinearTapeGroup(IReadOnlyList<LinearTape> members) : IDisposable
{
    /// <summary>The members' tapes, in the order they were recorded; for their outputs (the gradient comes through
    /// <see cref="Backward"/>).</summary>
    public IReadOnlyList<LinearTape> Members { get; } = members;

    /// <summary>
    /// The gradient with respect to the shared input, given each member's dL/dyᵢ (..., outᵢ), added into
    /// <paramref name="inputGrad"/> (..., in, contiguous) when given or returned as a new tensor; the trainable
    /// parameters' gradients go into their <c>.grad</c> (<see cref="LinearTape.Backward"/>).
    /// </summary>
    public virtual Tensor Backward(IReadOnlyList<Tensor> dys, Tensor? inputGrad)
    {
        CheckCount(dys);
        var grad = Members[0].Backward(dys[0], inputGrad);                                  // (..., in)
        for (int i = 1; i < Members.Count; i++) Members[i].Backward(dys[i], grad);
        return grad;
    }

    protected void CheckCount(IReadOnlyList<Tensor> dys)
    {
        if (dys.Count != Members.Count)
            throw new ArgumentException($"the group has {Members.Count} members and got {dys.Count} output gradients", nameof(dys));
    }

    public virtual void Dispose()
    {
        foreach (var member in Members) member.Dispose();
        GC.SuppressFinalize(this);
    }
}
