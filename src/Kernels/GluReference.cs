using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Kernels;

/// <summary>The activation of a gated linear unit (Shazeer 2020): act(gate) * up.</summary>
public enum GluActivation
{
    /// <summary>SwiGLU: silu(g) = g * sigmoid(g) (Llama, Mistral, Qwen).</summary>
    Silu,
    /// <summary>GeGLU with the tanh approximation of GELU (Gemma's gelu_pytorch_tanh).</summary>
    GeluTanh,
}

/// <summary>
/// Gated linear units in torch ops: the reference the fused kernel (Cuda/glu.cu) is held to. Forward is the
/// composition the model code writes, <c>F.silu(g) * u</c> / <c>F.gelu(g, tanh) * u</c>, each op rounding to the
/// dtype. Backward is autograd's through it written out (act(g) rounded, as the saved activation output):
///   du = dy * act(g),   dg = ((dy * u) rounded, in fp32) * act'(g), rounded to the dtype.
/// </summary>
public static class GluReference
{
    /// <param name="gate">(..., I) gate projection output.</param>
    /// <param name="up">(..., I) up projection output, same shape and dtype.</param>
    public static Tensor Forward(Tensor gate, Tensor up, GluActivation activation) =>
        activation == GluActivation.Silu ? F.silu(gate) * up : F.gelu(gate, GELU.Approximate.tanh) * up;

    /// <returns>(dGate, dUp) in the inputs' dtype.</returns>
    public static (Tensor DGate, Tensor DUp) Backward(Tensor dy, Tensor gate, Tensor up, GluActivation activation)
    {
        using var scope = NewDisposeScope();
        var dtype = gate.dtype;
        var act = activation == GluActivation.Silu ? F.silu(gate) : F.gelu(gate, GELU.Approximate.tanh);
        var du = dy * act;
        // fp32 arithmetic, as torch's activation-backward kernels (fp64 for fp64 inputs).
        var d = (dy * up).to(dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32);
        var g = gate.to(d.dtype);
        Tensor derivative;
        if (activation == GluActivation.Silu)
        {
            var s = sigmoid(g);
            derivative = s * (1.0 + g * (1.0 - s));
        }
        else
        {
            const double beta = 0.7978845608028654, kappa = 0.044715; // sqrt(2/pi), as torch's gelu kernels
            var t = tanh(beta * (g + kappa * g.pow(3)));
            derivative = 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * beta * (1.0 + 3.0 * kappa * g.pow(2));
        }
        var dg = (d * derivative).to(dtype);
        return (dg.MoveToOuterDisposeScope(), du.MoveToOuterDisposeScope());
    }
}
