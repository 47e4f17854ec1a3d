using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Models;

/// <summary>SwiGLU feed-forward (Shazeer 2020, "GLU Variants Improve Transformer", arXiv:2002.05202):
/// down(silu(gate(x)) * up(x)), no biases.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    readonly FrozenLinear gate_proj;
    readonly FrozenLinear up_proj;
    readonly FrozenLinear down_proj;

    public LlamaMlp(string name, FrozenLinear gateProj, FrozenLinear upProj, FrozenLinear downProj) : base(name)
    {
        gate_proj = gateProj;
        up_proj = upProj;
        down_proj = downProj;
        RegisterComponents();
    }

    /// <param name="x">(B, T, hidden)</param>
    /// <returns>(B, T, hidden)</returns>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gated = F.silu(gate_proj.call(x)) * up_proj.call(x);                   // (B, T, intermediate)
        return down_proj.call(gated).MoveToOuterDisposeScope();
    }
}
