using QLoraNet.Formats;
using QLoraNet.Kernels;
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
/// The arithmetic is the run's <see cref="FusedRmsNorm"/>: one CUDA kernel each way where the kernel selection loaded
/// it and the tensors fit, else its torch-op reference (<see cref="RmsNormReference"/>, HF's formulas above op for
/// op, so CPU results are today's bit for bit). <see cref="AddAndNorm"/> also takes the residual add in front of the
/// norm, the pre-norm block's "h = residual + sublayer(...); norm(h)", in the same kernel.
/// The weight is frozen (requires_grad = false): QLoRA trains adapters only.
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>, IDefersBackwardHandles
{
    readonly Parameter weight;
    readonly double eps;
    readonly NormKind kind;
    readonly FusedRmsNorm kernel;
    BackwardHandles handles = new();

    /// <param name="weight">(hidden) the learned scale (or its offset from one), already in the dtype and on the device it should live in.</param>
    /// <param name="kind">the family record's norm.</param>
    /// <param name="kernel">the run's fused RMSNorm (its kernel selection's); null = the torch-op reference.</param>
    public RmsNorm(string name, Tensor weight, double eps, NormKind kind = NormKind.Rms, FusedRmsNorm? kernel = null) : base(name)
    {
        if (kind is not (NormKind.Rms or NormKind.RmsOffsetOne)) throw new NotSupportedException($"norm {kind} is not implemented");
        this.weight = new Parameter(weight, requires_grad: false);
        this.eps = eps;
        this.kind = kind;
        this.kernel = kernel ?? FusedKernels.Reference().RmsNorm;
        RegisterComponents();
    }

    public NormKind Kind => kind;

    public Parameter Weight => weight;

    public double Eps => eps;

    /// <summary>
    /// Divides the norm's output by <paramref name="scales"/> (hidden) channel by channel, in place: how SmoothQuant and
    /// AWQ fold per-channel factors into the op before the linears they scale (for y = w · x̂ that is w /= s).
    /// </summary>
    public void DivideOutput(Tensor scales)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        switch (kind)
        {
            case NormKind.Rms:
                weight.div_(scales.to(weight.dtype, weight.device));
                break;
            default:
                throw new NotSupportedException($"folding scales into a {kind} norm is not implemented");
        }
    }

    /// <summary>Gemma's (1 + w) scale.</summary>
    bool UnitOffset => kind == NormKind.RmsOffsetOne;

    public void DeferBackwardHandlesTo(BackwardHandles owner) => handles = owner;

    /// <param name="x">(..., hidden)</param>
    /// <returns>(..., hidden) in x's dtype.</returns>
    public override Tensor forward(Tensor x) => kernel.Apply(x, weight, eps, UnitOffset, handles);

    /// <summary>For a backward written out by hand (<see cref="ExplicitLayerBackward"/>): <see cref="forward"/>'s value,
    /// or with a residual <see cref="AddAndNorm"/>'s (Saved.H is then the sum), without autograd, plus what
    /// <see cref="Backward"/> needs.</summary>
    public (Tensor Y, FusedRmsNorm.Saved Saved) ForwardSaving(Tensor x, Tensor? residual = null) =>
        kernel.ForwardSaving(x, residual, weight, eps, UnitOffset);

    /// <summary>The gradient of the norm's input from that of its output, plus <paramref name="dh"/> when given (the
    /// gradient the sum h also gets from the residual stream).</summary>
    public Tensor Backward(Tensor dy, FusedRmsNorm.Saved saved, Tensor? dh = null) =>
        kernel.BackwardFromSaved(dy, saved, weight, dh, UnitOffset);

    /// <summary>h = x + residual (rounded to the compute dtype, as a torch add) and norm(h), in one pass where the
    /// kernel runs: the same values as <c>h = residual + x; forward(h)</c>.</summary>
    /// <param name="x">(..., hidden) a sublayer's output.</param>
    /// <param name="residual">(..., hidden) the residual stream.</param>
    /// <returns>Sum: h, the new residual stream; Normed: norm(h), the next sublayer's input.</returns>
    public (Tensor Sum, Tensor Normed) AddAndNorm(Tensor x, Tensor residual) =>
        kernel.ApplyWithResidual(x, residual, weight, eps, UnitOffset, handles);
}
