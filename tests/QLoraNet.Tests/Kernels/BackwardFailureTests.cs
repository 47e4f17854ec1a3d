using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Kernels;

/// <summary>
/// A failure inside a custom backward (<see cref="BackwardFailure"/>): without the guard TorchSharp lets the exception
/// escape its native callback and the test host dies; with it, backward returns and the failure is thrown to the caller.
/// </summary>
[Trait("tier", "unit")]
public class BackwardFailureTests
{
    /// <summary>y = 2x whose backward fails as a CUDA out-of-memory in a layer's recomputation would.</summary>
    sealed class FailingDouble : autograd.SingleTensorFunction<FailingDouble>
    {
        public override string Name => nameof(FailingDouble);

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            using var noGrad = no_grad();
            return (Tensor)vars[0] * 2;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardFailure.Guard(() => throw new InvalidOperationException("out of memory in the recomputation"));
    }

    [Fact]
    public void A_failure_in_a_custom_backward_is_thrown_by_the_caller_and_only_once()
    {
        using var scope = NewDisposeScope();
        var x = torch.ones(3, requires_grad: true);
        var loss = (FailingDouble.apply(x) + x).sum();                    // another path to x: autograd goes on past the failure
        var e = Assert.Throws<InvalidOperationException>(() => BackwardFailure.Backward(loss));
        Assert.Equal("out of memory in the recomputation", e.Message);
        Assert.Contains(nameof(FailingDouble), e.StackTrace);              // the failure's own stack, not the rethrow's
        Assert.Equal([1f, 1f, 1f], x.grad!.data<float>().ToArray());      // the failed branch gave nothing, the other its ones
        BackwardFailure.ThrowIfFailed();                                   // kept once: nothing left
    }
}
