using QLoraNet.Formats;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019, "Root Mean Square Layer Normalization"):
/// y = weight * x / sqrt(mean(x^2) + eps), no mean subtraction, no bias. TorchSharp has none.
/// Computed in fp32 whatever the input dtype, as Hugging Face's LlamaRMSNorm does, because the mean of squares of
/// bf16 activations loses too much precision; the result goes back to the input dtype before the weight multiply.
/// The weight is frozen (requires_grad = false): QLoRA trains adapters only.
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly double eps;
    readonly NormKind kind;

    /// <param name="weight">(hidden) the learned scale, already in the dtype and on the device it should live in.</param>
    /// <param name="kind">the family record's norm; the switch point for Gemma's (1 + w) scale (see <see cref="ArchitectureSupport"/>).</param>
    public RmsNorm(string name, Tensor weight, double eps, NormKind kind = NormKind.Rms) : base(name)
    {
        if (kind != NormKind.Rms) throw new NotSupportedException($"norm {kind} is not implemented");
        this.weight = new Parameter(weight, requires_grad: false);
        this.eps = eps;
        this.kind = kind;
        RegisterComponents();
    }

    public NormKind Kind => kind;

    public Parameter Weight => weight;

    public double Eps => eps;

    /// <param name="x">(..., hidden)</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inputDType = x.dtype;
        var x32 = x.to(ScalarType.Float32);
        var variance = x32.pow(2).mean([-1L], keepdim: true);     // (..., 1)
        var normed = (x32 * rsqrt(variance + eps)).to(inputDType);
        // HF multiplies weight (model dtype) by the normed input; we also cast the weight so the output keeps the
        // input dtype even when norms are stored in a different dtype than the compute dtype.
        return (weight.to(inputDType) * normed).MoveToOuterDisposeScope();
    }
}
