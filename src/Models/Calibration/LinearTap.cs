using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// A linear that shows each input it receives to an observer before computing as the linear it wraps: how
/// calibration captures "the inputs of each linear" (AutoGPTQ's and AutoAWQ's forward hooks) through the model's
/// own slots, without hooks. Put in a slot for one pass, then replaced by the original again.
/// </summary>
public sealed class LinearTap : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> inner;
    readonly Action<Tensor> observe;

    public LinearTap(nn.Module<Tensor, Tensor> inner, Action<Tensor> observe) : base(nameof(LinearTap))
    {
        this.inner = inner;
        this.observe = observe;
    }

    public nn.Module<Tensor, Tensor> Inner => inner;

    /// <param name="x">(..., in): seen by the observer, then passed on.</param>
    public override Tensor forward(Tensor x)
    {
        observe(x);
        return inner.call(x);
    }
}
