using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>Gated feed-forward down(act(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer",
/// arXiv:2002.05202): with SiLU, SwiGLU (Llama, Mistral, Qwen2); with the tanh approximation of GELU, GeGLU (Gemma,
/// transformers' "gelu_pytorch_tanh" = torch's gelu(approximate="tanh")); with squared ReLU (So et al. 2021,
/// "Primer", arXiv:2109.08668; transformers' "relu2"), BitNet b1.58's, which also normalises the gated intermediate
/// before down_proj (its ffn_sub_norm: down(subnorm(act(gate(x)) * up(x)))). The three linears sit in
/// <see cref="LinearSlots"/> under the family record's names, with their biases when mlp_bias is set; the activation
/// and the optional sub-norm are the record's. act(gate) * up is, for SiLU and GELU-tanh, the run's <see cref="FusedGlu"/>:
/// one CUDA kernel each way that keeps only gate and up for backward, or elsewhere its torch-op reference,
/// <c>F.silu(gate) * up</c> / <c>F.gelu(gate, tanh) * up</c>; squared ReLU has no fused kernel and is torch ops.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>, IDefersBackwardHandles
{
    readonly LinearSlots projections;
    readonly Activation activation;
    readonly GluActivation? fusedActivation;
    readonly FusedGlu glu;
    readonly RmsNorm? subNorm;
    BackwardHandles handles = new();

    /// <param name="projections">the Gate, Up and Down linears with their record entries and optional biases (out).</param>
    /// <param name="glu">the run's fused gated unit (its kernel selection's); null = the torch-op reference.</param>
    /// <param name="subNorm">BitNet's ffn_sub_norm over the intermediate (registered under its own name), or null.</param>
    public LlamaMlp(string name, Activation activation, IEnumerable<(LayerLinear Spec, FrozenLinear Linear, Tensor? Bias)> projections,
        FusedGlu? glu = null, RmsNorm? subNorm = null) : base(name)
    {
        this.activation = activation;
        fusedActivation = Fused(activation);
        this.glu = glu ?? FusedKernels.Reference().Glu;
        RegisterComponents();
        if (subNorm is not null) register_module(subNorm.GetName(), this.subNorm = subNorm);
        this.projections = new LinearSlots(this);
        foreach (var (spec, linear, bias) in projections) this.projections.Add(spec.Name, spec.Role, linear, bias);
    }

    /// <summary>The gate/up/down slots (for replacing a projection by name).</summary>
    public LinearSlots Projections => projections;

    public void DeferBackwardHandlesTo(BackwardHandles owner) => handles = owner;

    /// <summary>The activation's fused gated unit, or null when it has none (torch ops).</summary>
    internal GluActivation? FusedActivation => fusedActivation;

    /// <summary>The run's fused gated unit (the explicit layer backward runs its forward and backward).</summary>
    internal FusedGlu Glu => glu;

    /// <summary>BitNet's ffn_sub_norm, or null.</summary>
    internal RmsNorm? SubNorm => subNorm;

    /// <summary>Where this MLP's custom backwards defer their gradients.</summary>
    internal BackwardHandles Handles => handles;

    static readonly LinearRole[] GateUpRoles = [LinearRole.Gate, LinearRole.Up];

    /// <summary>Whether frozen quantized gate and up run as one GEMM over one stacked dense matrix
    /// (<see cref="QLoraNet.Quant.FrozenLinearGroup"/>; speed-neutral in the training step, docs/BENCHMARKS.md session
    /// 29) or one after the other, so that at most one of their dense weights exists at a time (half the stacked
    /// matrix's memory: 86 MiB for a 7B layer; training.keep_dequantized_weights: false asks for it). The same values
    /// either way, up to the GEMM's summation order.</summary>
    public bool StackFrozenGateUp { get; set; } = true;

    /// <param name="x">(B, T, hidden)</param>
    /// <returns>(B, T, hidden)</returns>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return projections.Call(LinearRole.Down, Gated(x)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// residual + forward(x): the decoder layer's h + mlp(normed), with the add inside the down projection's GEMM
    /// where that is a bare frozen linear and no graph is built (<see cref="LinearSlots.CallAdding"/>; one kernel
    /// fewer, the sum rounded once), else forward then a plain add, as before.
    /// </summary>
    /// <param name="x">(B, T, hidden)</param>
    /// <param name="residual">(B, T, hidden)</param>
    /// <returns>(B, T, hidden)</returns>
    public Tensor ForwardAdding(Tensor x, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return projections.CallAdding(LinearRole.Down, Gated(x), residual).MoveToOuterDisposeScope();
    }

    /// <summary>The down projection's input: act(gate(x)) * up(x), sub-normed where the family has it.</summary>
    /// <param name="x">(B, T, hidden)</param>
    /// <returns>(B, T, intermediate) in the caller's dispose scope.</returns>
    Tensor Gated(Tensor x)
    {
        // gate and up read x: without a graph (a checkpointed forward, inference) their adapters may share work, and
        // without adapters they are one GEMM (unless memory comes first: StackFrozenGateUp).
        var gateUp = projections.CallShared(GateUpRoles, x, stackFrozen: StackFrozenGateUp);
        var (gate, up) = (gateUp[0], gateUp[1]);                                      // (B, T, intermediate) each
        var gated = fusedActivation is GluActivation fused
            ? glu.Apply(gate, up, fused, handles)
            : Activate(gate) * up;                                                    // (B, T, intermediate)
        return subNorm is null ? gated : subNorm.call(gated);
    }

    /// <summary>The switch point for the families' activations (see <see cref="ArchitectureSupport"/>): those the
    /// fused gated unit has; null for the rest, which <see cref="Activate"/> computes in torch ops.</summary>
    static GluActivation? Fused(Activation activation) => activation switch
    {
        Activation.Silu => GluActivation.Silu,
        Activation.GeluTanh => GluActivation.GeluTanh,
        Activation.ReluSquared => null,
        _ => throw new NotSupportedException($"activation {activation} is not implemented"),
    };

    /// <summary>The activations without a fused kernel, in torch ops.</summary>
    Tensor Activate(Tensor x) => activation switch
    {
        Activation.ReluSquared => F.relu(x).square(),   // transformers' ReLUSquaredActivation: square(relu(x))
        _ => throw new NotSupportedException($"activation {activation} is not implemented"),
    };
}
