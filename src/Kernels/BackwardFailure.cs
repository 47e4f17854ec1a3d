using System.Runtime.ExceptionServices;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// A failure inside a custom autograd function's backward, carried out to the code that called backward.
/// <para>
/// An exception cannot cross TorchSharp's native callback into a custom backward: TorchSharp 0.107 lets it escape
/// <c>Node.ApplyFunc</c> and the process dies ("Unhandled exception", verified), so a CUDA out-of-memory in a layer's
/// recomputation would end a training run with a stack trace and no error line. So every custom backward runs its
/// body through <see cref="Guard"/>: a failure is caught and kept, and the function returns no gradients (undefined:
/// autograd goes on as with zeros); the code that called backward calls <see cref="ThrowIfFailed"/> right after
/// (<see cref="Backward"/> does both) and the failure is thrown there, with its own stack, and reported like any other.
/// </para>
/// Process-wide, because autograd runs a CUDA graph's backward on its own device thread, not the caller's; the first
/// failure is kept (later ones follow from it: the gradients it left undefined).
/// </summary>
public static class BackwardFailure
{
    static ExceptionDispatchInfo? first;

    /// <summary>More entries than any of our functions has inputs: TorchSharp drops the extra undefined ones.</summary>
    const int NoGradientCount = 32;

    /// <summary>Runs a custom backward's body; on a failure keeps it and returns no gradients.</summary>
    public static List<Tensor> Guard(Func<List<Tensor>> backward)
    {
        try
        {
            return backward();
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref first, ExceptionDispatchInfo.Capture(e), null);
            return [.. Enumerable.Repeat<Tensor>(null!, NoGradientCount)];
        }
    }

    /// <summary>Throws the failure kept since the last call, if any (and forgets it).</summary>
    public static void ThrowIfFailed() => Interlocked.Exchange(ref first, null)?.Throw();

    /// <summary><c>loss.backward()</c>, then <see cref="ThrowIfFailed"/>.</summary>
    public static void Backward(Tensor loss)
    {
        loss.backward();
        ThrowIfFailed();
    }
}
