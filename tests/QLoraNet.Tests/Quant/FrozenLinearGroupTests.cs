using QLoraNet.Kernels;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

/// <summary>
/// Frozen NF4 linears on one input as one GEMM (<see cref="FrozenLinearGroup"/>, the MLP's gate and up) on the CPU
/// (through <see cref="StackingLinear"/>: the real NF4 weights stack only where the CUDA kernel writes in place):
/// each weight dequantized into its block of one matrix equals its own dequantization bit for bit, each output is a
/// row-strided view of one product and equals the member's own forward to the GEMM's summation order (fp32: a dot
/// product of K terms differs by at most ~K u32 of Σ|x w| between two orders), the tapes' backward is the members'
/// own bit for bit, and the group is refused wherever it would not pay or could not give a graph.
/// </summary>
[Trait("tier", "unit")]
public class FrozenLinearGroupTests
{
    const long In = 64;
    const double U32 = 5.960464477539063e-8;   // 2^-24

    static FourBitLinear Nf4(long outFeatures, int seed, KernelSelection? kernels = null)
    {
        using var w = randn([outFeatures, In], generator: new Generator((ulong)seed));
        return new FourBitLinear(FourBitWeight.Quantize(w, FourBitType.Nf4, 64, doubleQuant: true), ScalarType.Float32,
            kernels ?? KernelSelection.For(CPU));
    }

    static StackingLinear Linear(long outFeatures, int seed) => new(Nf4(outFeatures, seed));

    static Tensor Input(int seed = 9) => randn([2, 5, In], generator: new Generator((ulong)seed));   // (B, T, in)

    /// <summary>|a - b| within two GEMM orders' rounding of each entry: K u32 Σ|x||w| (plus a tiny floor).</summary>
    static void AssertWithinGemmRounding(Tensor expected, Tensor actual, Tensor x, Tensor w)
    {
        var bound = In * U32 * x.abs().reshape(-1, In).matmul(w.abs().t()).view_as(expected) + 1e-30;
        var diff = (expected - actual).abs();
        Assert.True((diff <= bound).all().item<bool>(), $"differs by {diff.max().item<float>():E2}, bound {bound.min().item<float>():E2}");
    }

    [Fact]
    public void Dequantizing_into_a_block_of_rows_equals_the_weights_own_dequantization()
    {
        using var scope = NewDisposeScope();
        var linear = Nf4(24, 1);
        var buffer = full([40, In], float.NaN);
        linear.MatMulWeight.DequantizeInto(buffer.narrow(0, 8, 24));
        Assert.True(buffer.narrow(0, 8, 24).equal(linear.DequantizeWeight(ScalarType.Float32)).all().item<bool>());
        Assert.True(buffer.narrow(0, 0, 8).isnan().all().item<bool>());           // nothing written outside its block
        Assert.True(buffer.narrow(0, 32, 8).isnan().all().item<bool>());
    }

    [Fact]
    public void One_gemm_gives_each_members_forward_as_a_view_of_one_product()
    {
        using var scope = NewDisposeScope();
        var (gate, up) = (Linear(48, 1), Linear(32, 2));
        var x = Input();
        using var noGrad = no_grad();
        var members = FrozenLinearGroup.Members([gate, up], x);
        Assert.NotNull(members);
        var outputs = FrozenLinearGroup.Forward(members!, x);
        Assert.Equal(new long[] { 2, 5, 48 }, outputs[0].shape);
        Assert.Equal(new long[] { 2, 5, 32 }, outputs[1].shape);
        Assert.Equal(80, outputs[0].stride(1));                                        // rows of the (.., 80) product
        Assert.Equal(48, outputs[1].storage_offset() - outputs[0].storage_offset());
        AssertWithinGemmRounding(gate.forward(x), outputs[0], x, gate.DequantizeWeight(ScalarType.Float32));
        AssertWithinGemmRounding(up.forward(x), outputs[1], x, up.DequantizeWeight(ScalarType.Float32));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void On_tapes_each_members_backward_is_its_own(bool keepWeight)
    {
        using var scope = NewDisposeScope();
        var (gate, up) = (Linear(48, 1), Linear(32, 2));
        var x = Input();
        using var noGrad = no_grad();
        using var group = FrozenLinearGroup.Record(FrozenLinearGroup.Members([gate, up], x)!, x, keepWeight);
        using var ownGate = gate.Record(x, keepWeight);
        using var ownUp = up.Record(x, keepWeight);
        AssertWithinGemmRounding(ownGate.Output!, group.Members[0].Output!, x, gate.DequantizeWeight(ScalarType.Float32));
        AssertWithinGemmRounding(ownUp.Output!, group.Members[1].Output!, x, up.DequantizeWeight(ScalarType.Float32));
        var (dGate, dUp) = (randn([2, 5, 48], generator: new Generator(3)), randn([2, 5, 32], generator: new Generator(4)));
        var expected = ownUp.Backward(dUp, ownGate.Backward(dGate, null));
        var actual = group.Backward([dGate, dUp], null);
        Assert.True(expected.equal(actual).all().item<bool>(), $"differs by {(expected - actual).abs().max().item<float>():E2}");
    }

    [Fact]
    public void The_group_is_refused_where_it_would_not_pay_or_a_graph_is_needed()
    {
        using var scope = NewDisposeScope();
        var (gate, up) = (Linear(48, 1), Linear(32, 2));
        var x = Input();
        // A graph: the checkpointed forward and recomputation run without one; autograd needs each member's function.
        using (enable_grad())
            Assert.Null(FrozenLinearGroup.Members([gate, up], x.requires_grad_(true)));
        using var noGrad = no_grad();
        var plain = x.detach();
        Assert.Null(FrozenLinearGroup.Members([gate], plain));                                  // one member
        using var dense = new DenseFrozenLinear(randn([32, In]), ScalarType.Float32);
        Assert.Null(FrozenLinearGroup.Members([gate, dense], plain));                            // a dense base: a copy for nothing
        Assert.Null(FrozenLinearGroup.Members([gate, Nf4(32, 3)], plain));   // NF4 on the CPU: the copy would cost what the GEMM saves
        Assert.Null(FrozenLinearGroup.Members([Nf4(48, 1), Nf4(32, 3)], plain));
        using var wider = new StackingLinear(new FourBitLinear(FourBitWeight.Quantize(randn([32, 2 * In]), FourBitType.Nf4, 64, doubleQuant: true), ScalarType.Float32, KernelSelection.For(CPU)));
        Assert.Null(FrozenLinearGroup.Members([gate, wider], plain));                            // another input width
        Assert.Null(FrozenLinearGroup.Members([gate, "not a linear"], plain));
        Assert.NotNull(FrozenLinearGroup.Members([gate, up], plain));
    }

    [Fact]
    public void The_gated_units_kernel_reads_the_two_halves_through_their_row_stride()
    {
        using var scope = NewDisposeScope();
        var both = randn([2, 5, 80]);
        Assert.Equal(80L, FusedGlu.RowStride(both.narrow(-1, 0, 48)));
        Assert.Equal(80L, FusedGlu.RowStride(both.narrow(-1, 48, 32)));
        Assert.Equal(48L, FusedGlu.RowStride(randn([2, 5, 48])));
        Assert.Null(FusedGlu.RowStride(randn([48, 10]).t()));                                    // columns not contiguous
        Assert.Null(FusedGlu.RowStride(both.narrow(-1, 0, 44).narrow(1, 0, 4).transpose(0, 1))); // rows do not collapse
        Assert.Null(FusedGlu.RowStride(randn([6, 84]).narrow(1, 0, 40)));                         // a row stride not a multiple of 8
    }
}
