using QLoraNet.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Distributed;

public class GradientSyncTests
{
    static (string, Tensor)[] Parameters(int rank)
    {
        var a = full(new long[] { 2, 3 }, 1f + rank).requires_grad_(true);
        var b = full(4, -2f * rank).requires_grad_(true);
        a.grad = full(new long[] { 2, 3 }, 3f * (rank + 1));
        b.grad = full(4, 1f + rank);
        return [("a", a), ("b", b)];
    }

    [Fact]
    public void Mean_divides_the_summed_gradients_by_the_world_size_and_sum_does_not()
    {
        var results = InProcessRanks.Run(3, c =>
        {
            var mean = Parameters(c.Rank);
            new GradientSync(c, mean, GradientReduction.Mean).Reduce();
            var sum = Parameters(c.Rank);
            new GradientSync(c, sum, GradientReduction.Sum).Reduce();
            return (MeanA: mean[0].Item2.grad![1, 2].item<float>(), MeanB: mean[1].Item2.grad![0].item<float>(), SumA: sum[0].Item2.grad![0, 0].item<float>());
        });
        Assert.All(results, r => Assert.Equal((6f, 2f, 18f), r)); // a: (3+6+9)/3; b: (1+2+3)/3; sum of a: 18
    }

    [Fact]
    public void Broadcasting_parameters_makes_every_replica_rank_zeros()
    {
        var results = InProcessRanks.Run(2, c =>
        {
            var p = Parameters(c.Rank);
            new GradientSync(c, p, GradientReduction.Mean).BroadcastParameters();
            return (p[0].Item2[0, 0].item<float>(), p[1].Item2[3].item<float>());
        });
        Assert.All(results, r => Assert.Equal((1f, 0f), r));
    }

    [Fact]
    public void A_parameter_without_a_gradient_is_named()
    {
        var outcomes = InProcessRanks.RunAll(2, c =>
        {
            var p = Parameters(c.Rank).Append(("lora_B", zeros(3).requires_grad_(true))).ToList();
            new GradientSync(c, p, GradientReduction.Sum).Reduce();
            return 0;
        }, TimeSpan.FromSeconds(10));
        Assert.Contains("parameter 'lora_B' has no gradient on this rank", outcomes[0].Error!.Message);
    }

    [Fact]
    public void A_single_process_needs_no_collectives()
    {
        var p = Parameters(0);
        new GradientSync(new SingleProcessCollectives(CPU), p, GradientReduction.Mean).Reduce();
        Assert.Equal(3f, p[0].Item2.grad![0, 0].item<float>());
    }
}
