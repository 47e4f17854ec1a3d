using QLoraNet.Formats;
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
/// and the optional sub-norm are the record's.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    readonly LinearSlots projections;
    readonly Activation activation;
    readonly RmsNorm? subNorm;

    /// <param name="projections">the Gate, Up and Down linears with their record entries and optional biases (out).</param>
    /// <param name="subNorm">BitNet's ffn_sub_norm over the intermediate (registered under its own name), or null.</param>
    public LlamaMlp(string name, Activation activation, IEnumerable<(LayerLinear Spec, FrozenLinear Linear, Tensor? Bias)> projections,
        RmsNorm? subNorm = null) : base(name)
    {
        this.activation = activation;
        RegisterComponents();
        if (subNorm is not null) register_module(subNorm.GetName(), this.subNorm = subNorm);
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
        if (subNorm is not null) gated = subNorm.call(gated);
        return projections.Call(LinearRole.Down, gated).MoveToOuterDisposeScope();
    }

    /// <summary>The switch point for the families' activations: see <see cref="ArchitectureSupport"/>.</summary>
    Tensor Activate(Tensor x) => activation switch
    {
        Activation.Silu => F.silu(x),
        Activation.GeluTanh => F.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        Activation.ReluSquared => F.relu(x).square(),   // transformers' ReLUSquaredActivation: square(relu(x))
        _ => throw new NotSupportedException($"activation {activation} is not implemented"),
    };
}
