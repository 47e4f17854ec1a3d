using QLoraNet.Kernels;
using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;
using static QLoraNet.Tests.Kernels.KernelTestData;

namespace QLoraNet.Tests.Kernels;

/// <summary>The RoPE reference against the model's RotaryEmbedding and autograd (bit for bit: the closed-form
/// backward makes autograd's roundings), and the fused op's autograd function against plain autograd.</summary>
[Trait("tier", "unit")]
public class RopeTests
{
    const long B = 2, Heads = 4, KvHeads = 2, T = 5, D = 16;

    /// <summary>q as the model makes it: a (B, heads, T, D) transpose of the projection's (B, T, heads, D) output.</summary>
    static Tensor Projected(long heads, ScalarType dtype, int seed) => Randn([B, T, heads, D], dtype, seed).transpose(1, 2);

    static (Tensor Cos, Tensor Sin) CosSin(ScalarType dtype)
    {
        using var rotary = new RotaryEmbedding("rotary_emb", D, 10000.0, dtype, CPU);
        var positions = tensor(new long[] { 0, 1, 2, 3, 4, 7, 8, 0, 1, 2 }, [B, T]); // second row: packed, restarting
        return rotary.call(positions);
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Reference_forward_is_the_model_rotary_embedding_bit_for_bit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = CosSin(dtype);
        var q = Projected(Heads, dtype, 1);
        AssertIdentical(RopeReference.Forward(q, cos, sin), RotaryEmbedding.Apply(q, cos, sin), "forward");
        AssertIdentical(Cpu.Rope.Apply(q, cos, sin, new BackwardHandles()), RotaryEmbedding.Apply(q, cos, sin), "FusedRope.Apply on the CPU");
    }

    [Theory]
    [InlineData(ScalarType.Float64)]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Closed_form_backward_equals_autograd_bit_for_bit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = CosSin(dtype);
        var q = Projected(Heads, dtype, 2).requires_grad_(true);
        var dy = Randn([B, Heads, T, D], dtype, 3);
        var expected = Grads(RopeReference.Forward(q, cos, sin), dy, q)[0];
        AssertIdentical(RopeReference.Backward(dy, cos, sin), expected, "dx");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Fused_function_for_q_and_k_equals_plain_autograd_bit_for_bit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = CosSin(dtype);
        var q = Projected(Heads, dtype, 4).requires_grad_(true);
        var k = Projected(KvHeads, dtype, 5).requires_grad_(true);
        var (dq, dk) = (Randn([B, Heads, T, D], dtype, 6), Randn([B, KvHeads, T, D], dtype, 7));
        var (qPlain, kPlain) = (RopeReference.Forward(q, cos, sin), RopeReference.Forward(k, cos, sin));
        var (qFused, kFused) = FusedRope.ApplyQkWithReferenceFunction(q, k, cos, sin, new BackwardHandles());
        AssertIdentical(qFused, qPlain, "q");
        AssertIdentical(kFused, kPlain, "k");
        var expected = autograd.grad([qPlain, kPlain], [q, k], [dq, dk]);
        var actual = autograd.grad([qFused, kFused], [q, k], [dq, dk]);
        AssertIdentical(actual[0], expected[0], "dq");
        AssertIdentical(actual[1], expected[1], "dk");
    }

    [Fact]
    public void Rotation_preserves_each_pair_norm_in_fp64()
    {
        // (x1, x2) -> (x1 c - x2 s, x2 c + x1 s) is a rotation when cos^2 + sin^2 = 1: a check of the formula itself.
        using var scope = NewDisposeScope();
        var angles = Randn([B, T, D / 2], ScalarType.Float64, 9, 10.0);
        var (cos, sin) = (cat([angles, angles], -1).cos(), cat([angles, angles], -1).sin());
        var q = Projected(Heads, ScalarType.Float64, 8);
        var y = RopeReference.Forward(q, cos, sin);
        Tensor PairNorms(Tensor t) => t.narrow(-1, 0, D / 2).pow(2) + t.narrow(-1, D / 2, D / 2).pow(2);
        Assert.True(RelativeError(PairNorms(y), PairNorms(q)) < 1e-14);
    }
}
