using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// One linear's forward run without autograd, holding what its backward needs, for a backward written out by hand
/// (the decoder layer's, Models.ExplicitLayerBackward): the recomputation of a checkpointed layer records each linear
/// here instead of building an autograd graph, and the layer's backward then calls <see cref="Backward"/> on each in
/// reverse order. A frozen linear (<see cref="FrozenLinear.Record"/>) keeps nothing but, when asked, its dense weight
/// (so backward does not dequantize it again); an adapter (Peft.LoraLinear) keeps its small intermediates too.
/// The tape owns what it holds, not its input: dispose it once its backward has run.
/// </summary>
public abstract class LinearTape : IDisposable
{
    /// <summary>(..., out) y in the compute dtype, or null when recorded without the product (see
    /// <see cref="FrozenLinear.Record"/>): then only the gradient paths are kept.</summary>
    public Tensor? Output { get; protected set; }

    /// <summary>
    /// The gradient with respect to the input, given <paramref name="dy"/> (..., out) = dL/dy, added into
    /// <paramref name="inputGrad"/> (..., in, contiguous) when given (in place, and returned) or returned as a new tensor; the
    /// gradients of trainable parameters are added into their <c>.grad</c>, as autograd would.
    /// </summary>
    public abstract Tensor Backward(Tensor dy, Tensor? inputGrad);

    /// <summary>Disposes the output now (its reader is done with it) while the gradient paths stay.</summary>
    public void ReleaseOutput()
    {
        Output?.Dispose();
        Output = null;
    }

    /// <summary>Output += bias (out), as a torch add in the output's dtype: a frozen bias after the linear.</summary>
    public void AddToOutput(Tensor bias)
    {
        var old = Output ?? throw new InvalidOperationException("the tape was recorded without its product");
        using var b = bias.to(old.dtype);
        Output = (old + b).DetachFromDisposeScope();
        old.Dispose();
    }

    /// <summary>Releases the output and what the tape kept.</summary>
    public virtual void Dispose()
    {
        Output?.Dispose();
        Output = null;
        GC.SuppressFinalize(this);
    }

    /// <summary>2-D view (rows, last) of a (..., last) tensor, for a GEMM.</summary>
    protected static Tensor Rows(Tensor t) => t.reshape(-1, t.size(-1));
}
