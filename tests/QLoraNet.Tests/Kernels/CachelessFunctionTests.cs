using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Kernels;

/// <summary>
/// <see cref="CachelessFunction{T}"/>: TorchSharp's custom-function node holds an empty_like of each output until the
/// node or the caller's scope goes (a 16 MiB tensor per decoder layer of a 7B model at 2048 tokens, alive through the
/// forward); Call leaves a one-element stand-in of the same shape instead, and backward, materialized zeros included,
/// is unchanged.
/// </summary>
[Trait("tier", "unit")]
public class CachelessFunctionTests
{
    /// <summary>Where a test function's forward leaves its context.</summary>
    sealed class Contexts
    {
        public readonly List<autograd.AutogradContext> Seen = [];
    }

    /// <summary>(y, z) = (2x, 3x) over (x, contexts): the arithmetic both pair functions below share.</summary>
    static class Pair
    {
        public static List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
        {
            ((Contexts)vars[1]).Seen.Add(ctx);
            var x = (Tensor)vars[0];
            return [x * 2, x * 3];
        }

        public static List<Tensor> Backward(List<Tensor> g) => [g[0] * 2 + g[1] * 3, null!];
    }

    /// <summary>The pair the plain TorchSharp way.</summary>
    sealed class PlainPair : autograd.MultiTensorFunction<PlainPair>
    {
        public override string Name => nameof(PlainPair);
        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars) => Pair.Forward(ctx, vars);
        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> g) => Pair.Backward(g);
    }

    /// <summary>The same pair without the buffers.</summary>
    sealed class CachelessPair : CachelessMultiFunction<CachelessPair>
    {
        public override string Name => nameof(CachelessPair);
        protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars) => Pair.Forward(ctx, vars);
        protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> g) => Pair.Backward(g);
    }

    /// <summary>y = x^2 without the buffer.</summary>
    sealed class CachelessSquare : CachelessFunction<CachelessSquare>
    {
        public override string Name => nameof(CachelessSquare);

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            ((Contexts)vars[1]).Seen.Add(ctx);
            var x = (Tensor)vars[0];
            ctx.save_for_backward([x]);
            return x * x;
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor g) => [g * 2 * ctx.get_saved_variables()[0], null!];
    }

    [Fact]
    public void TorchSharp_keeps_an_output_sized_buffer_per_output_of_a_plain_function()
    {
        // The behaviour CachelessFunction exists for: if a TorchSharp release stops keeping these, this fails and the
        // workaround can go.
        using var scope = NewDisposeScope();
        var seen = new Contexts();
        var x = randn(4, 8, requires_grad: true);
        PlainPair.apply(x, seen);
        var buffers = FunctionOutputCache.Buffers(seen.Seen.Single());
        Assert.NotNull(buffers);
        Assert.Equal(2, buffers!.Count);
        Assert.All(buffers, b => Assert.Equal([8L, 1L], b!.stride()));          // dense: 32 elements each
    }

    [Fact]
    public void Call_leaves_one_element_stand_ins_of_the_outputs_shape()
    {
        using var scope = NewDisposeScope();
        var seen = new Contexts();
        var x = randn(4, 8, requires_grad: true);
        var outputs = CachelessPair.Call(x, seen);
        var buffers = FunctionOutputCache.Buffers(seen.Seen.Single())!;
        Assert.Equal(2, buffers.Count);
        Assert.All(buffers, b =>
        {
            Assert.Equal([4L, 8L], b!.shape);
            Assert.Equal([0L, 0L], b.stride());                                 // one element of storage
            Assert.Equal(x.dtype, b.dtype);
        });
        Assert.Equal(2 * 4 * 8, outputs.Sum(o => o.numel()));
        Assert.StartsWith("autograd output buffers: released", FunctionOutputCache.Describe);
    }

    [Fact]
    public void Gradients_are_unchanged_and_an_output_without_one_gets_zeros_of_its_shape()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 8, requires_grad: true);
        // Only the first output reaches the loss: autograd materializes zeros for the second from the stand-in.
        var pair = CachelessPair.Call(x, new Contexts());
        var square = CachelessSquare.Call(pair[0], new Contexts());
        square.sum().backward();
        var expected = (x.detach() * 2 * 2 * 2).contiguous();                    // d(4x^2)/dx = 8x
        Assert.Equal(expected.data<float>().ToArray(), x.grad!.data<float>().ToArray());
    }

    [Fact]
    public void Without_a_graph_there_is_no_buffer_to_release()
    {
        using var scope = NewDisposeScope();
        var seen = new Contexts();
        using (no_grad()) CachelessSquare.Call(randn(3, requires_grad: true), seen);
        var buffers = FunctionOutputCache.Buffers(seen.Seen.Single());
        Assert.True(buffers is null || buffers.Count == 0);
    }
}
