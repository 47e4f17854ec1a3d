using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>Gated feed-forward down(act(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer",
/// arXiv:2002.05202): with SiLU, SwiGLU (Llama, Mistral, Qwen2); with the tanh approximation of GELU, GeGLU (Gemma,
/// transformers' "gelu_pytorch_tanh" = torch's gelu(approximate="tanh")). The three linears sit in
/// <see cref="LinearSlots"/> under the family record's names, with their biases when mlp_bias is set; the activation
/// is the record's.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    readonly LinearSlots projections;
    readonly Activation activation;

    /// <param name="projections">the Gate, Up and Down linears with their record entries and optional biases (out).</param>
    public LlamaMlp(string name, Activation activation, IEnumerable<(LayerLinear Spec, FrozenLinear Linear, Tensor? Bias)> projections) : base(name)
    {
        this.activation = activation;
        RegisterComponents();
        this.projections = new LinearSlots(this);
        foreach (var (spec, linear, bias) in projections) this.projections.Add(spec.Name, spec.Role, linear, bias);
    }

    /// <summary>The gate/up/down slots (for replacing a projection by name).</summary>
    public LinearSlots Projections => projections;

    /// <param name="x">(B, T, hidden)</param>
    /// <returns>(B, T, hidden)</returns>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gated = Activate(projections.Call(LinearRole.Gate, x)) * projections.Call(LinearRole.Up, x);   // (B, T, intermediate)
        return projections.Call(LinearRole.Down, gated).MoveToOuterDisposeScope();
    }

    /// <summary>The switch point for the families' activations (BitNet's squared ReLU would go here): see <see cref="ArchitectureSupport"/>.</summary>
    Tensor Activate(Tensor x) => activation switch
    {
        Activation.Silu => F.silu(x),
        Activation.GeluTanh => F.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        _ => throw new NotSupportedException($"activation {activation} is not implemented"),
    };
}
