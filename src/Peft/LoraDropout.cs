using QLoraNet.Kernels;
using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Dropout on a LoRA adapter's input (peft's `lora_dropout`, an nn.Dropout): in training each element is zeroed with
/// probability p and the survivors are scaled by 1/(1-p) (inverted dropout, Srivastava et al. 2014); the identity in
/// eval mode. The mask comes from an explicit <see cref="RandomStream"/>, which TorchSharp's Dropout cannot take:
/// the one the caller passes (a training run owns one and reseeds it per micro-batch, so a resumed run draws the
/// same masks) or one of this module's own. Activation checkpointing replays it through <see cref="IStochasticModule"/>.
/// p is applied rounded to a multiple of 2^-16 (<see cref="RandomStream.DropProbability"/>), and the survivors are
/// scaled by one over the rounded keep probability, so the expected output is exactly the input.
/// On CUDA the fused kernel (<see cref="FusedDropout"/>) makes the same mask from the draw's key inside the multiply,
/// each way, and keeps no mask for backward; elsewhere the stream's tensor ops make it. Both consume one draw, so
/// the stream's position (and what activation checkpointing replays) does not depend on the path.
/// </summary>
public sealed class LoraDropout : nn.Module<Tensor, Tensor>, IStochasticModule, IDefersBackwardHandles
{
    readonly double _p;
    readonly double _scale;
    readonly FusedDropout _kernel;
    BackwardHandles _handles = new();

    /// <param name="p">probability of zeroing an element, in (0, 1).</param>
    /// <param name="random">where masks come from; null = a stream of this module's own, seeded 0.</param>
    /// <param name="kernel">the fused dropout of the run's kernel selection; null = the torch-op reference.</param>
    public LoraDropout(double p, RandomStream? random = null, FusedDropout? kernel = null) : base("Dropout")
    {
        if (!(p > 0 && p < 1)) throw new ArgumentException($"LoRA dropout {p} must be in (0, 1)");
        _p = p;
        _scale = 1 / (1 - RandomStream.DropProbability(p));
        Random = random ?? new RandomStream();
        _kernel = kernel ?? FusedKernels.Reference().Dropout;
    }

    public void DeferBackwardHandlesTo(BackwardHandles owner) => _handles = owner;

    public RandomStream Random { get; }

    public double P => _p;

    /// <summary>(..., in) -> (..., in)</summary>
    public override Tensor forward(Tensor x)
    {
        if (!training) return x.alias();
        if (_kernel.Fits(x)) return _kernel.Apply(x, Random.NextKey(), RandomStream.DropThreshold(_p), _scale, _handles);
        using var scope = NewDisposeScope();
        var keep = Random.KeepMask(x.shape, _p, x.device);        // bool, the only tensor kept for backward
        return _kernel.ApplyReference(x, keep, _scale).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Forward with no autograd, for a backward written out by hand (the decoder layer's): the dropped input and the
    /// way back through the same mask. Draws from the stream exactly as <see cref="forward"/> does, so a
    /// recomputation replays the same masks either way.
    /// </summary>
    public Draw DrawFor(Tensor x)
    {
        if (!training) return new Draw(x.alias(), dy => dy.alias(), null);
        if (_kernel.Fits(x))
        {
            ulong key = Random.NextKey();
            long threshold = RandomStream.DropThreshold(_p);
            double scale = _scale;
            var kernel = _kernel;
            return new Draw(kernel.Apply(x, key, threshold, scale, _handles), dy => kernel.Backward(dy, key, threshold, scale), null);
        }
        var keep = Random.KeepMask(x.shape, _p, x.device);        // bool, kept for the way back
        var output = _kernel.ApplyReference(x, keep, _scale);
        double s = _scale;
        return new Draw(output, dy => dy.mul(keep).mul_(s), keep);
    }

    /// <summary>One draw of the mask: its output and the gradient's way back (the mask itself kept only on the reference path).</summary>
    public sealed class Draw(Tensor output, Func<Tensor, Tensor> backward, Tensor? keep) : IDisposable
    {
        // The draw owns its tensors, whatever dispose scope it was made in.
        readonly Tensor? keep = keep?.DetachFromDisposeScope();

        /// <summary>(..., in) the dropped input.</summary>
        public Tensor Output { get; } = output.DetachFromDisposeScope();

        /// <summary>dx (..., in) from dy (..., in).</summary>
        public Tensor Backward(Tensor dy) => backward(dy);

        public void Dispose()
        {
            Output.Dispose();
            keep?.Dispose();
        }
    }
}
