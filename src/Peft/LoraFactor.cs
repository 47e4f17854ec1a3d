using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// One trainable LoRA factor: a bias-free linear map holding a single parameter named `weight`, so that LoRA's
/// parameters are named `lora_A.weight` / `lora_B.weight` exactly as peft names them (its factors are nn.Linear).
/// It has no forward of its own: <see cref="LoraLinear"/> casts the weight to the base's compute dtype first.
/// </summary>
public sealed class LoraFactor : nn.Module
{
    private readonly Parameter weight;

    /// <param name="initial">the starting value [outFeatures, inFeatures]; kept in fp32 whatever the compute dtype.</param>
    public LoraFactor(string name, Tensor initial) : base(name)
    {
        // The cast and the detach are handles on the caller's storage: disposed here, or they would keep it until a GC.
        using (var fp32 = initial.to(ScalarType.Float32))
        using (var detached = fp32.detach())
            weight = new Parameter(detached.clone(), requires_grad: true);
        (_deviceType, _deviceIndex) = LoraDevice.RecordFor(weight);
        RegisterComponents();
    }

    /// <summary>
    /// The factors stay fp32 whatever dtype the model is converted to: the optimizer's updates to them are far
    /// smaller than bf16's resolution. Device moves still apply.
    /// </summary>
    protected override nn.Module _to(ScalarType dtype, bool non_blocking) => this;

    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking) =>
        _to(device.type, device.index, non_blocking);

    /// <summary>The parameter as currently registered (<c>Module.to</c> replaces parameter objects).</summary>
    public Parameter Weight => get_parameter("weight")!;
}
