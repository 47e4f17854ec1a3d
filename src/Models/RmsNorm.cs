using QLoraNet.Formats;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019, "Root Mean Square Layer Normalization"):
/// y = scale * x / sqrt(mean(x^2) + eps), no mean subtraction, no bias. TorchSharp has none.
/// The normalisation is computed in fp32 whatever the input dtype, as Hugging Face does, because the mean of squares
/// of bf16 activations loses too much precision. The family record's <see cref="NormKind"/> decides the rest:
/// <list type="bullet">
/// <item><see cref="NormKind.Rms"/> (LlamaRMSNorm): the normed value goes back to the input dtype, then is
/// multiplied by the weight, scale = w.</item>
/// <item><see cref="NormKind.RmsOffsetOne"/> (GemmaRMSNorm): the weight is stored as an offset from one and the
/// multiply happens in fp32 before the cast back, (normed32 * (1 + w32)).to(input dtype) (transformers PR 29402:
/// "Llama does x.to(float16) * w whilst Gemma is (x * w).to(float16)").</item>
/// </list>
/// The weight is frozen (requires_grad = false): QLoRA trains adapters only.
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly double eps;
    readonly NormKind kind;

    /// <param name="weight">(hidden) the learned scale (or its offset from one), already in the dtype and on the device it should live in.</param>
    /// <param name="kind">the family record's norm.</param>
    public RmsNorm(string name, Tensor weight, double eps, NormKind kind = NormKind.Rms) : base(name)
    {
        if (kind is not (NormKind.Rms or NormKind.RmsOffsetOne)) throw new NotSupportedException($"norm {kind} is not implemented");
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
        var normed32 = x32 * rsqrt(variance + eps);                 // (..., hidden) fp32
        if (kind == NormKind.RmsOffsetOne)
            return (normed32 * (1.0 + weight.to(ScalarType.Float32))).to(inputDType).MoveToOuterDisposeScope();
        // HF multiplies weight (model dtype) by the normed input; we also cast the weight so the output keeps the
        // input dtype even when norms are stored in a different dtype than the compute dtype.
        return (weight.to(inputDType) * normed32.to(inputDType)).MoveToOuterDisposeScope();
    }
}
