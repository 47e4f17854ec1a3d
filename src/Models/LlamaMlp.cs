using QLoraNet.Formats;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>Gated feed-forward down(act(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer",
/// arXiv:2002.05202): with SiLU, SwiGLU (Llama, Mistral, Qwen2); with the tanh approximation of GELU, GeGLU (Gemma,
/// transformers' "gelu_pytorch_tanh" = torch's gelu(approximate="tanh")). The three linears sit in
/// <see cref="LinearSlots"/> under the family record's names, with their biases when mlp_bias is set; the activation
/// is the record's. act(gate) * up is the run's <see cref="FusedGlu"/>: one CUDA kernel each way that keeps only gate and
/// up for backward, or elsewhere its torch-op reference, <c>F.silu(gate) * up</c> / <c>F.gelu(gate, tanh) * up</c>.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>, IDefersBackwardHandles
{
    readonly LinearSlots projections;
    readonly GluActivation activation;
    readonly FusedGlu glu;
    BackwardHandles handles = new();

    /// <param name="projections">the Gate, Up and Down linears with their record entries and optional biases (out).</param>
    /// <param name="glu">the run's fused gated unit (its kernel selection's); null = the torch-op reference.</param>
    public LlamaMlp(string name, Activation activation, IEnumerable<(LayerLinear Spec, FrozenLinear Linear, Tensor? Bias)> projections,
        FusedGlu? glu = null) : base(name)
    {
        this.activation = Gated(activation);
        this.glu = glu ?? FusedKernels.Reference().Glu;
        RegisterComponents();
        this.projections = new LinearSlots(this);
        foreach (var (spec, linear, bias) in projections) this.projections.Add(spec.Name, spec.Role, linear, bias);
    }

    /// <summary>The gate/up/down slots (for replacing a projection by name).</summary>
    public LinearSlots Projections => projections;

    public void DeferBackwardHandlesTo(BackwardHandles owner) => handles = owner;

    /// <param name="x">(B, T, hidden)</param>
    /// <returns>(B, T, hidden)</returns>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gated = glu.Apply(projections.Call(LinearRole.Gate, x), projections.Call(LinearRole.Up, x), activation, handles); // (B, T, intermediate)
        return projections.Call(LinearRole.Down, gated).MoveToOuterDisposeScope();
    }

    /// <summary>The switch point for the families' activations (BitNet's squared ReLU would go here, with a GLU
    /// variant of its own): see <see cref="ArchitectureSupport"/>.</summary>
    static GluActivation Gated(Activation activation) => activation switch
    {
        Activation.Silu => GluActivation.Silu,
        Activation.GeluTanh => GluActivation.GeluTanh,
        _ => throw new NotSupportedException($"activation {activation} is not implemented"),
    };
}
