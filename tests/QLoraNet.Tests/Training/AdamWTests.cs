using QLoraNet.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

[Trait("tier", "unit")]
public class AdamWTests
{
    [Fact]
    public void Matches_torch_AdamW_over_several_steps()
    {
        using var rng = new Generator(1);
        var init = torch.randn(4, 3, generator: rng);
        var ours = init.clone().requires_grad_(true);
        var theirs = init.clone().requires_grad_(true);
        var opt = new AdamW(new[] { ("w", ours) }, lr: 0.01, weightDecay: 0.1);
        var ref_ = torch.optim.AdamW(new[] { new TorchSharp.Modules.Parameter(theirs) }, lr: 0.01, weight_decay: 0.1);
        for (int i = 0; i < 5; i++)
        {
            var g = torch.randn(4, 3, generator: rng);
            ours.grad = g.clone();
            opt.StepOnce();
            ref_.zero_grad();
            var p = ref_.parameters().First();
            p.grad = g.clone();
            ref_.step();
            Assert.True(ours.allclose(p, rtol: 1e-5, atol: 1e-6), $"step {i}: {(ours - p).abs().max().item<float>()}");
        }
    }

    [Fact]
    public void Save_then_load_continues_identically()
    {
        using var rng = new Generator(2);
        var a = torch.randn(5, generator: rng).requires_grad_(true);
        var b = a.detach().clone().requires_grad_(true);
        var optA = new AdamW(new[] { ("p", a) }, lr: 0.05);
        var grads = Enumerable.Range(0, 6).Select(_ => torch.randn(5, generator: rng)).ToList();
        for (int i = 0; i < 3; i++) { a.grad = grads[i].clone(); optA.StepOnce(); }
        var (state, step) = optA.Save();
        using (torch.no_grad()) b.copy_(a);
        var optB = new AdamW(new[] { ("p", b) }, lr: 0.05);
        optB.Load(state, step);
        for (int i = 3; i < 6; i++)
        {
            a.grad = grads[i].clone(); optA.StepOnce();
            b.grad = grads[i].clone(); optB.StepOnce();
        }
        Assert.True(a.eq(b).all().item<bool>());
    }

    /// <summary>The moments are the optimizer's: disposing it releases them (two per parameter) and a disposed
    /// optimizer refuses to step rather than touch released tensors.</summary>
    [Fact]
    public void Dispose_releases_the_moments_and_a_disposed_optimizer_refuses_to_step()
    {
        var p = torch.ones(3).requires_grad_(true);
        var q = torch.ones(2, 2).requires_grad_(true);
        var opt = new AdamW(new[] { ("p", p), ("q", q) }, lr: 0.1);
        p.grad = torch.ones(3);
        q.grad = torch.ones(2, 2);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        opt.StepOnce();
        Assert.Equal(4, DisposeScopeManager.Statistics.ThreadTotalLiveCount - before);
        opt.Dispose();
        Assert.Equal(0, DisposeScopeManager.Statistics.ThreadTotalLiveCount - before);
        Assert.Throws<ObjectDisposedException>(() => opt.StepOnce());
        opt.Dispose();   // twice is harmless
    }

    [Theory]
    [InlineData("constant", 5, 1.0)]
    [InlineData("linear", 55, 0.5)]
    [InlineData("cosine", 55, 0.5)]
    [InlineData("cosine", 105, 0.0)]
    public void Schedule_shapes(string kind, int step, double expectedFraction)
    {
        var s = new LrSchedule(kind, 2e-4, 5, 105);
        Assert.Equal(2e-4 * expectedFraction, s.At(step), 12);
        Assert.Equal(2e-4 / 5, s.At(0), 12);
        Assert.Equal(2e-4, s.At(4), 12);
    }
}
