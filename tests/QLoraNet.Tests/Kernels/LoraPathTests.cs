using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>The LoRA addmm path against LoraLinear's ops: the same function (fp64), the same gradients, and in
/// fp32/bf16 within the roundings the reference makes and the fused GEMM epilogue does not.</summary>
[Trait("tier", "unit")]
public class LoraPathTests
{
    const long N = 6, In = 20, Out = 12, R = 4;
    const double Scaling = 2.0;

    static (Tensor Base, Tensor H, Tensor A, Tensor B) Inputs(ScalarType dtype) =>
        (Randn([2, N / 2, Out], dtype, 1), Randn([2, N / 2, In], dtype, 2), Randn([R, In], dtype, 3, 0.3), Randn([Out, R], dtype, 4, 0.3));

    [Fact]
    public void Same_function_and_gradients_in_fp64()
    {
        using var scope = NewDisposeScope();
        var (b0, h0, a0, bb0) = Inputs(ScalarType.Float64);
        Tensor[] Leaves() => [b0.clone().requires_grad_(true), h0.clone().requires_grad_(true), a0.clone().requires_grad_(true), bb0.clone().requires_grad_(true)];
        var x1 = Leaves();
        var x2 = Leaves();
        var y1 = LoraPath.Reference(x1[0], x1[1], x1[2], x1[3], Scaling);
        var y2 = LoraPath.AddLowRank(x2[0], x2[1], x2[2], x2[3], Scaling);
        Assert.Equal(y1.shape, y2.shape);
        Assert.True(RelativeError(y2, y1) < 1e-15);
        var dy = Randn(y1.shape, ScalarType.Float64, 5);
        var g1 = autograd.grad([y1], x1, [dy]);
        var g2 = autograd.grad([y2], x2, [dy]);
        for (int i = 0; i < 4; i++) Assert.True(RelativeError(g2[i], g1[i]) < 1e-14, $"gradient {i}: {RelativeError(g2[i], g1[i]):G3}");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Within_the_reference_roundings_in_narrow_dtypes(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (b0, h0, a0, bb0) = Inputs(dtype);
        var reference = LoraPath.Reference(b0, h0, a0, bb0, Scaling);
        var fused = LoraPath.AddLowRank(b0, h0, a0, bb0, Scaling);
        // Exact: base + s * (h A^T) B^T in fp64 from the same inputs (down rounded to the dtype, as both round it).
        var down = nn.functional.linear(h0, a0).to(ScalarType.Float64);
        var up = down.matmul(bb0.to(ScalarType.Float64).t());
        var exact = b0.to(ScalarType.Float64) + Scaling * up;
        // Reference: up rounded (after an R-term product: gamma_R), scaled and rounded, added and rounded; the fused
        // GEMM rounds once at the end. Each is within its bound of exact, so within the sum of both of each other.
        double u = Roundoff(dtype), u32 = Roundoff(ScalarType.Float32);
        var absUp = down.abs().matmul(bb0.to(ScalarType.Float64).abs().t());
        var refBound = Scaling * (R * u32 * absUp + 2 * u * up.abs() + 2 * u * (up.abs() + R * u32 * absUp)) + u * exact.abs();
        var fusedBound = Scaling * R * u32 * absUp + u * exact.abs();
        AssertWithin(fused, reference, (refBound + fusedBound) * 1.01, "y");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void A_handed_over_base_takes_the_same_sum_in_place(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (b0, h0, a0, bb0) = Inputs(dtype);
        var down = nn.functional.linear(h0, a0);                                             // (2, N/2, R)
        var copied = LoraPath.AddUp(b0, down, bb0, Scaling);                                 // out of place: b0 untouched
        var owned = b0.clone();
        var inPlace = LoraPath.AddUp(owned, down, bb0, Scaling, ownsBase: true);
        Assert.True(LoraPath.InPlace(owned, down, bb0));
        Assert.True(inPlace.equal(copied).all().item<bool>(), "the same GEMM on the same operands: bit for bit");
        Assert.True(owned.equal(copied).all().item<bool>(), "the sum was made in the handed-over tensor");
        Assert.False(b0.equal(copied).all().item<bool>(), "the out-of-place sum left its base alone");
        var viaLowRank = LoraPath.AddLowRank(b0.clone(), h0, a0, bb0, Scaling, ownsBase: true);
        Assert.True(viaLowRank.equal(LoraPath.AddLowRank(b0, h0, a0, bb0, Scaling)).all().item<bool>());
    }

    [Fact]
    public void A_handed_over_base_stays_untouched_where_a_graph_is_built_or_it_is_strided()
    {
        using var scope = NewDisposeScope();
        var (b0, h0, a0, bb0) = Inputs(ScalarType.Float32);
        var down = nn.functional.linear(h0, a0);
        // Under autograd the sum must be a new node: the base keeps its value and its gradient is dy.
        var leaf = b0.clone().requires_grad_(true);
        Assert.False(LoraPath.InPlace(leaf, down, bb0));
        var y = LoraPath.AddUp(leaf, down, bb0, Scaling, ownsBase: true);
        Assert.True(leaf.detach().equal(b0).all().item<bool>());
        var dy = Randn(y.shape, ScalarType.Float32, 6);
        Assert.True(autograd.grad([y], [leaf], [dy])[0].equal(dy).all().item<bool>());
        // A strided base (a transposed view) would be copied by torch: the out-of-place path runs instead.
        var wide = b0.transpose(0, 1).contiguous().transpose(0, 1);                            // same values, strided
        var before = wide.clone();
        Assert.False(LoraPath.InPlace(wide, down, bb0));
        var z = LoraPath.AddUp(wide, down, bb0, Scaling, ownsBase: true);
        Assert.True(wide.equal(before).all().item<bool>());
        Assert.True(z.equal(LoraPath.AddUp(b0, down, bb0, Scaling)).all().item<bool>());
    }
}
