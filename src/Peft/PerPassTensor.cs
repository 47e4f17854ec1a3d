using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// A tensor made from trainable parameters for the forward arithmetic (a LoRA factor cast to the compute dtype, the
/// row-concatenated A of adapters sharing an input), kept for one forward pass of the model (<see cref="ForwardPasses"/>)
/// and reused by that pass's checkpointed recomputation: the parameters change only between passes. Made again in a
/// new pass, or when asked for another dtype or device (the model moved). Owns the tensor.
/// </summary>
internal sealed class PerPassTensor : IDisposable
{
    long pass = -1;
    Tensor? value;

    /// <summary>The tensor kept for the current pass, made by <paramref name="make"/> (without a graph) when it is stale.</summary>
    /// <param name="dtype">the dtype the caller needs.</param>
    /// <param name="source">a parameter it is made from: the device it must be on.</param>
    /// <returns>a handle the caller's dispose scope disposes.</returns>
    public Tensor Get(ForwardPasses passes, ScalarType dtype, Tensor source, Func<Tensor> make)
    {
        long current = passes.Current;
        if (current != pass || value is null || value.dtype != dtype
            || value.device_type != source.device_type || value.device_index != source.device_index)
        {
            value?.Dispose();
            value = null;
            using (var scope = NewDisposeScope())
            using (no_grad())
                value = make().DetachFromDisposeScope();                        // intermediates go with the scope
            pass = current;
        }
        return value.alias();
    }

    public void Dispose()
    {
        value?.Dispose();
        value = null;
    }
}
