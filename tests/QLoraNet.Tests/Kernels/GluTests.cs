using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Tests.Kernels;

/// <summary>The gated-linear-unit reference (forward = the model's composition; closed-form backward) against
/// autograd, and the fused op's autograd function against plain autograd.</summary>
[Trait("tier", "unit")]
public class GluTests
{
    static readonly long[] Shape = [3, 5, 48];

    [Fact]
    public void Forward_is_the_llama_mlp_composition_bit_for_bit()
    {
        using var scope = NewDisposeScope();
        var (g, u) = (Randn(Shape, ScalarType.BFloat16, 1, 3.0), Randn(Shape, ScalarType.BFloat16, 2));
        AssertIdentical(GluReference.Forward(g, u, GluActivation.Silu), F.silu(g) * u, "swiglu");
        AssertIdentical(Cpu.Glu.Apply(g, u, GluActivation.Silu, new BackwardHandles()), F.silu(g) * u, "FusedGlu.Apply on the CPU");
    }

    [Fact]
    public void Gelu_tanh_is_the_tanh_formula_in_fp64()
    {
        using var scope = NewDisposeScope();
        var (g, u) = (Randn(Shape, ScalarType.Float64, 3, 3.0), Randn(Shape, ScalarType.Float64, 4));
        var expected = 0.5 * g * (1.0 + tanh(Math.Sqrt(2 / Math.PI) * (g + 0.044715 * g.pow(3)))) * u;
        Assert.True(RelativeError(GluReference.Forward(g, u, GluActivation.GeluTanh), expected) < 1e-14);
    }

    [Theory]
    [InlineData(GluActivation.Silu)]
    [InlineData(GluActivation.GeluTanh)]
    public void Closed_form_backward_equals_autograd_in_fp64(GluActivation activation)
    {
        using var scope = NewDisposeScope();
        var g = Randn(Shape, ScalarType.Float64, 5, 3.0).requires_grad_(true);
        var u = Randn(Shape, ScalarType.Float64, 6).requires_grad_(true);
        var dy = Randn(Shape, ScalarType.Float64, 7);
        var expected = Grads(GluReference.Forward(g, u, activation), dy, g, u);
        var (dg, du) = GluReference.Backward(dy, g.detach(), u.detach(), activation);
        Assert.True(RelativeError(dg, expected[0]) < 1e-14, $"dgate {RelativeError(dg, expected[0]):G3}");
        Assert.True(RelativeError(du, expected[1]) < 1e-15, $"dup {RelativeError(du, expected[1]):G3}");
    }

    [Theory]
    [InlineData(ScalarType.Float32, GluActivation.Silu)]
    [InlineData(ScalarType.Float32, GluActivation.GeluTanh)]
    [InlineData(ScalarType.BFloat16, GluActivation.Silu)]
    [InlineData(ScalarType.BFloat16, GluActivation.GeluTanh)]
    public void Fused_function_equals_plain_autograd_within_one_rounding(ScalarType dtype, GluActivation activation)
    {
        using var scope = NewDisposeScope();
        var g = Randn(Shape, dtype, 8, 3.0).requires_grad_(true);
        var u = Randn(Shape, dtype, 9).requires_grad_(true);
        var dy = Randn(Shape, dtype, 10);
        var plain = GluReference.Forward(g, u, activation);
        var fused = FusedGlu.ApplyWithReferenceFunction(g, u, activation, new BackwardHandles());
        AssertIdentical(fused, plain, "forward");
        var expected = Grads(plain, dy, g, u);
        var actual = Grads(fused, dy, g, u);
        AssertIdentical(actual[1], expected[1], "dup");       // the same op: dy * act(g)
        // dgate: the same fp32 terms as autograd's activation-backward kernel, with its own exp/tanh and in another
        // order. Each term carries a few fp32 roundoffs; an error of a couple of ulp in sigmoid or tanh is multiplied by
        // the terms it feeds, up to |g| (1 + 3 kappa g^2) (the gelu chain rule) times |dy * u|; then one rounding to the dtype.
        var d = (dy.to(ScalarType.Float64) * u.detach().to(ScalarType.Float64)).abs();
        var g64 = g.detach().to(ScalarType.Float64).abs();
        var pre = Roundoff(ScalarType.Float32) * d * (12 + 4 * g64 * (1 + 0.134145 * g64.pow(2)));
        var bound = pre + 2 * Roundoff(dtype) * (expected[0].abs().to(ScalarType.Float64) + pre);
        AssertWithin(actual[0], expected[0], bound, "dgate");
    }
}
