using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Dropout on a LoRA adapter's input (peft's `lora_dropout`, an nn.Dropout): in training each element is zeroed with
/// probability p and the survivors are scaled by 1/(1-p) (inverted dropout, Srivastava et al. 2014), computed as
/// PyTorch's reference path does (noise = bernoulli(1-p) / (1-p); x * noise); the identity in eval mode.
/// The mask is drawn from an explicit generator, which TorchSharp's Dropout cannot take: the one the caller passes
/// (a training run owns one and reseeds it per step, so a resumed run draws the same masks) or one of this module's
/// own. Activation checkpointing replays it through <see cref="IStochasticModule"/>.
/// </summary>
public sealed class LoraDropout : nn.Module<Tensor, Tensor>, IStochasticModule
{
    readonly double _p;
    readonly Generator? _own;

    /// <param name="p">probability of zeroing an element, in (0, 1).</param>
    /// <param name="generator">where masks come from; null = a generator of this module's own, seeded 0, on <paramref name="device"/>.</param>
    /// <param name="device">the device of the inputs (where the masks are drawn when the module has its own generator).</param>
    public LoraDropout(double p, Generator? generator, Device device) : base("Dropout")
    {
        if (!(p > 0 && p < 1)) throw new ArgumentException($"LoRA dropout {p} must be in (0, 1)");
        _p = p;
        _own = generator is null ? new Generator(0, device) : null;
        Generator = generator ?? _own!;
    }

    public Generator Generator { get; }

    public double P => _p;

    /// <summary>(..., in) -> (..., in)</summary>
    public override Tensor forward(Tensor x)
    {
        if (!training) return x.alias();
        using var scope = NewDisposeScope();
        var noise = torch.empty(x.shape, x.dtype, Generator.device).bernoulli_(1 - _p, Generator).div_(1 - _p);
        return (x * noise.to(x.device)).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _own?.Dispose();
        base.Dispose(disposing);
    }
}
