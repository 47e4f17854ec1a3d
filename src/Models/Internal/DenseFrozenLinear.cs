using QLoraNet.Quant;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models.Internal;

/// <summary>
/// Stand-in until src/Quant provides its DenseFrozenLinear: an unquantized frozen weight kept in the compute dtype.
/// Delete this file and switch callers to QLoraNet.Quant.DenseFrozenLinear when it lands on main.
/// </summary>
public sealed class DenseFrozenLinear : FrozenLinear
{
    readonly Parameter weight;

    /// <param name="weight">(out, in) in any float dtype on the target device; copied, the caller keeps ownership.</param>
    public DenseFrozenLinear(Tensor weight, ScalarType computeDType)
        : base("DenseFrozenLinear", weight.shape[1], weight.shape[0], computeDType)
    {
        this.weight = new Parameter(weight.to(computeDType, copy: true), requires_grad: false);
        RegisterComponents();
    }

    public override string FormatName => ComputeDType switch
    {
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        ScalarType.Float32 => "fp32",
        _ => ComputeDType.ToString(),
    };

    public override long StorageBytes => weight.NumberOfElements * weight.ElementSize;

    public override Tensor DequantizeWeight(ScalarType dtype) => weight.detach().to(dtype, copy: true);

    /// <param name="x">(..., in)</param>
    /// <returns>(..., out)</returns>
    public override Tensor forward(Tensor x) => F.linear(x, weight);
}
