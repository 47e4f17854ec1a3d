using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// A custom autograd function that does not hold a copy-sized buffer per output. TorchSharp 0.107's
/// <c>Function.apply</c> keeps, in each graph node it builds, <c>torch.empty_like</c> of every output (its
/// <c>Node.SaveOutputsInfo</c>), only so that backward can make zeros of that shape where an output gets no gradient;
/// the buffer lives on the output's device until the caller's dispose scope ends or the node is freed. PyTorch keeps
/// the shape alone. For a layer checkpoint that is one (B, T, hidden) tensor per decoder layer alive through the whole
/// forward: 32 x 16 MiB = 0.5 GiB at a 7B model's peak at 2048 tokens, for nothing. <see cref="Call"/> applies the
/// function and then swaps each of those buffers for a stand-in of the same shape, dtype and device whose storage is
/// one element (every stride 0): zeros made from it have the output's shape, so backward behaves as before.
/// Subclasses implement <see cref="Forward"/> and <see cref="Backward"/> over their own arguments; a trailing
/// argument (the box the forward leaves its context in) and its null gradient are added and removed here.
/// </summary>
public abstract class CachelessFunction<T> : autograd.SingleTensorFunction<T> where T : CachelessFunction<T>, new()
{
    /// <summary>Applies the function (as <c>apply</c>) and releases the node's per-output buffer.</summary>
    public static Tensor Call(params object[] vars) => Apply(vars).Output;

    /// <summary>
    /// As <see cref="Call"/>, for a function whose <see cref="Forward"/> returns a tensor it made and holds nowhere
    /// else: the forward's own handle of that tensor is released as well. apply returns a second handle of the same
    /// tensor (TorchSharp wraps the output anew), and the first stays in the caller's dispose scope, so a caller that
    /// disposes the returned handle early would not free the memory until the scope ends. A checkpointed layer stack
    /// does (an input gone to host memory: the caller of Models.LayerCheckpoint).
    /// </summary>
    public static Tensor CallReleasingForwardHandle(params object[] vars)
    {
        var (output, made) = Apply(vars);
        if (made is not null && !ReferenceEquals(made, output) && !vars.Any(v => ReferenceEquals(v, made)))
            made.Dispose();
        return output;
    }

    /// <summary>apply, then the node's per-output buffer released; the output, and the forward's own handle of it.</summary>
    static (Tensor Output, Tensor? Made) Apply(object[] vars)
    {
        var box = new ContextBox();
        var output = apply([.. vars, box]);
        FunctionOutputCache.Release(box.Context);
        return (output, box.Output);
    }

    public sealed override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var box = (ContextBox)vars[^1];
        box.Context = ctx;
        return box.Output = Forward(ctx, vars[..^1]);
    }

    // Guarded here as well as in each Backward: a failure must never cross the native callback (BackwardFailure).
    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
        BackwardFailure.Guard(() => [.. Backward(ctx, gradOutput), null!]);

    /// <summary>The function's forward over the arguments given to <see cref="Call"/>.</summary>
    protected abstract Tensor Forward(autograd.AutogradContext ctx, object[] vars);

    /// <summary>One gradient per argument given to <see cref="Call"/> (null for the non-tensors).</summary>
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput);
}

/// <summary>The same for a function of several outputs (<see cref="CachelessFunction{T}"/>).</summary>
public abstract class CachelessMultiFunction<T> : autograd.MultiTensorFunction<T> where T : CachelessMultiFunction<T>, new()
{
    /// <summary>Applies the function (as <c>apply</c>) and releases the node's per-output buffers.</summary>
    public static List<Tensor> Call(params object[] vars)
    {
        var box = new ContextBox();
        var outputs = apply([.. vars, box]);
        FunctionOutputCache.Release(box.Context);
        return outputs;
    }

    public sealed override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ((ContextBox)vars[^1]).Context = ctx;
        return Forward(ctx, vars[..^1]);
    }

    // Guarded here as well as in each Backward: a failure must never cross the native callback (BackwardFailure).
    public sealed override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs) =>
        BackwardFailure.Guard(() => [.. Backward(ctx, gradOutputs), null!]);

    /// <summary>The function's forward over the arguments given to <see cref="Call"/>.</summary>
    protected abstract List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars);

    /// <summary>One gradient per argument given to <see cref="Call"/> (null for the non-tensors).</summary>
    protected abstract List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs);
}

/// <summary>Where a forward leaves its autograd context for the <c>Call</c> that applied it (a plain argument: no
/// shared state between calls or threads).</summary>
public sealed class ContextBox
{
    public autograd.AutogradContext? Context { get; set; }

    /// <summary>The forward's own handle of its output (single-output functions).</summary>
    public Tensor? Output { get; set; }
}

/// <summary>
/// The per-output buffers TorchSharp's custom-function node keeps (<see cref="CachelessFunction{T}"/>), reached
/// through two private fields of TorchSharp 0.107 (<c>AutogradContext._node</c>, <c>Node&lt;T&gt;._outputCache</c>).
/// Where a TorchSharp release renames them, nothing is released and <see cref="Describe"/> says so (the `info` report);
/// a test holds this build to releasing them.
/// </summary>
public static class FunctionOutputCache
{
    const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Instance;
    static readonly FieldInfo? NodeField = typeof(autograd.AutogradContext).GetField("_node", Private);

    /// <summary>One line for the kernel report.</summary>
    public static string Describe => NodeField is null
        ? "autograd output buffers: kept by each custom-function node (TorchSharp's AutogradContext has no _node field in this version)"
        : "autograd output buffers: released after each custom function's forward (shape kept for zeros: one element of storage)";

    /// <summary>The buffers the node behind <paramref name="ctx"/> holds, or null where they cannot be reached (a
    /// node without a graph keeps none).</summary>
    internal static List<Tensor?>? Buffers(autograd.AutogradContext? ctx)
    {
        if (ctx is null || NodeField?.GetValue(ctx) is not { } node) return null;
        return node.GetType().GetField("_outputCache", Private)?.GetValue(node) as List<Tensor?>;
    }

    /// <summary>Replaces each buffer by a one-element stand-in of its shape, dtype and device, made in the caller's
    /// dispose scope as the buffer was, so it lives exactly as long (the node disposes it too, as it did the buffer).</summary>
    public static void Release(autograd.AutogradContext? ctx)
    {
        if (Buffers(ctx) is not { } buffers) return;
        for (int i = 0; i < buffers.Count; i++)
        {
            if (buffers[i] is not { } held || held.IsInvalid) continue;
            var standIn = empty_strided(held.shape, new long[held.shape.Length], held.dtype, held.device);
            buffers[i] = standIn;
            held.Dispose();
        }
    }
}
