using QLoraNet.Kernels;
using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>
/// The RMSNorm reference (what the CUDA kernel is held to, and what runs on the CPU) against the model's RmsNorm and
/// against autograd; and the fused op's autograd functions, run with the reference inside, against plain autograd.
/// </summary>
[Trait("tier", "unit")]
public class RmsNormTests
{
    const double Eps = 1e-6;
    static readonly long[] Shape = [2, 3, 64];

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Reference_forward_is_the_model_RmsNorm_bit_for_bit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var x = Randn(Shape, dtype, 1, 3.0);
        var w = (1.0 + Randn([Shape[^1]], ScalarType.Float64, 2, 0.1)).to(dtype);
        using var module = new RmsNorm("norm", w.clone(), Eps); // the module takes over the handle it is given
        AssertIdentical(RmsNormReference.Forward(x, w, Eps, unitOffset: false), module.call(x), "forward");
        // The op itself takes the reference path off the GPU.
        AssertIdentical(Cpu.RmsNorm.Apply(x, w, Eps, false, new BackwardHandles()), module.call(x), "FusedRmsNorm.Apply on the CPU");
    }

    [Fact]
    public void Gemma_forward_is_x_over_its_rms_times_one_plus_weight()
    {
        using var scope = NewDisposeScope();
        var x = Randn(Shape, ScalarType.Float64, 3);
        var w = Randn([Shape[^1]], ScalarType.Float64, 4, 0.1);
        var expected = x / (x.pow(2).mean([-1L], keepdim: true) + Eps).sqrt() * (1.0 + w);
        Assert.True(RelativeError(RmsNormReference.Forward(x, w, Eps, unitOffset: true), expected) < 1e-15);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Closed_form_backward_equals_autograd_in_fp64(bool unitOffset)
    {
        using var scope = NewDisposeScope();
        var x = Randn(Shape, ScalarType.Float64, 5, 2.0).requires_grad_(true);
        var w = 1.0 + Randn([Shape[^1]], ScalarType.Float64, 6, 0.1);
        var dy = Randn(Shape, ScalarType.Float64, 7);
        var expected = Grads(RmsNormReference.Forward(x, w, Eps, unitOffset), dy, x)[0];
        var actual = RmsNormReference.Backward(dy, x.detach(), RmsNormReference.InverseRms(x.detach(), Eps), w, unitOffset);
        // fp64: both are sums of H products, a few hundred roundoffs at most.
        Assert.True(RelativeError(actual, expected) < 1e-13, $"relative error {RelativeError(actual, expected):G3}");
    }

    [Theory]
    [InlineData(ScalarType.Float32, false)]
    [InlineData(ScalarType.Float32, true)]
    [InlineData(ScalarType.BFloat16, false)]
    [InlineData(ScalarType.BFloat16, true)]
    public void Fused_function_equals_plain_autograd_forward_exactly_and_backward_within_rounding(ScalarType dtype, bool unitOffset)
    {
        using var scope = NewDisposeScope();
        var x = Randn(Shape, dtype, 8, 2.0).requires_grad_(true);
        var w = (1.0 + Randn([Shape[^1]], ScalarType.Float64, 9, 0.1)).to(dtype);
        var dy = Randn(Shape, dtype, 10);
        var plain = RmsNormReference.Forward(x, w, Eps, unitOffset);
        var fused = FusedRmsNorm.ApplyWithReferenceFunction(x, w, Eps, unitOffset, new BackwardHandles());
        AssertIdentical(fused, plain, "forward");
        var expected = Grads(plain, dy, x)[0];
        var actual = Grads(fused, dy, x)[0];
        AssertWithin(actual, expected, BackwardBound(x, w, dy, unitOffset, expected), "dx");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Residual_variant_returns_the_sum_and_its_norm_and_routes_both_gradients(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var x = Randn(Shape, dtype, 11).requires_grad_(true);
        var residual = Randn(Shape, dtype, 12, 2.0).requires_grad_(true);
        var w = (1.0 + Randn([Shape[^1]], ScalarType.Float64, 13, 0.1)).to(dtype);
        var (dh, dy) = (Randn(Shape, dtype, 14), Randn(Shape, dtype, 15));

        var hPlain = x + residual;
        var yPlain = RmsNormReference.Forward(hPlain, w, Eps, false);
        var (h, y) = FusedRmsNorm.ApplyWithResidualReferenceFunction(x, residual, w, Eps, false, new BackwardHandles());
        AssertIdentical(h, hPlain, "h");
        AssertIdentical(y, yPlain, "y");
        // Both outputs used downstream, as in a decoder layer: loss = <h, dh> + <y, dy>.
        var expected = autograd.grad([hPlain, yPlain], [x, residual], [dh, dy]);
        var actual = autograd.grad([h, y], [x, residual], [dh, dy]);
        AssertIdentical(actual[0], actual[1], "dx and dresidual");
        AssertIdentical(expected[0], expected[1], "autograd's dx and dresidual");
        // One more rounding than the norm alone: dh + (norm's dx) in the compute dtype.
        var normBound = BackwardBound(hPlain.detach(), w, dy, false, expected[0] - dh);
        var bound = normBound + 2 * Roundoff(dtype) * (expected[0].abs().to(ScalarType.Float64) + normBound);
        AssertWithin(actual[0], expected[0], bound, "dx");
    }

    [Fact]
    public void Ops_take_rows_of_any_width_off_the_gpu()
    {
        using var scope = NewDisposeScope();
        var x = Randn([3, 8200], ScalarType.Float32, 16); // wider than the kernel's 8192 and not a multiple of 8 * 256
        var w = ones(8200);
        var (h, y) = Cpu.RmsNorm.ApplyWithResidual(x, x, w, Eps, false, new BackwardHandles());
        AssertIdentical(y, RmsNormReference.Forward(x + x, w, Eps, false), "y");
    }

    /// <summary>
    /// |closed form - autograd| for dx = g r - h (r^3 sum(g h) / H): both evaluate the same terms in fp32 (or fp32
    /// then a rounding to bf16), in different orders. Each term carries a few roundoffs of its size, the sum over
    /// H products up to H roundoffs of sum |g h|; the final rounding to the dtype adds one rounding of the result.
    /// </summary>
    static Tensor BackwardBound(Tensor x, Tensor w, Tensor dy, bool unitOffset, Tensor reference)
    {
        var dtype = x.dtype;
        double u32 = Roundoff(ScalarType.Float32);
        var h = x.detach().to(ScalarType.Float64);
        var w64 = w.to(ScalarType.Float64);
        var g = (dy.to(ScalarType.Float64) * (unitOffset ? 1.0 + w64 : w64)).abs();
        long width = h.shape[^1];
        var r = (h.pow(2).mean([-1L], keepdim: true) + Eps).rsqrt();
        var sumAbs = (g * h.abs()).sum([-1L], keepdim: true);
        var pre = u32 * (8 * g * r + (width + 8) * h.abs() * r.pow(3) * sumAbs / width);
        return pre + 2 * Roundoff(dtype) * (reference.detach().to(ScalarType.Float64).abs() + pre);
    }
}
