using QLoraNet.Kernels;
using QLoraNet.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>training.optimizer_on_host: AdamW with its moments in host memory, paged through a device window in
/// groups, is the same update as with them beside the parameters, bit for bit (same arithmetic, only where the
/// moments rest between steps differs). On CPU the window is host memory too; the device run's parity is
/// `bench train --optimizer-on-host` on the H200 (docs/BENCHMARKS.md).</summary>
[Trait("tier", "unit")]
public class HostMomentsTests
{
    static (string, Tensor)[] Parameters(ulong seed)
    {
        using var rng = new Generator(seed);
        // A window of 8 values (below): the 3 x 5 parameter is larger than it (a group of its own, the window grows),
        // the small ones share groups.
        return new[] { ("a", torch.randn(4, generator: rng)), ("b", torch.randn(3, 5, generator: rng)), ("c", torch.randn(2, generator: rng)),
                       ("d", torch.randn(3, generator: rng)), ("e", torch.randn(1, 2, generator: rng)) }
            .Select(p => (p.Item1, p.Item2.requires_grad_(true))).ToArray();
    }

    static void SetGrads((string, Tensor)[] ps, Generator rng)
    {
        foreach (var (_, p) in ps) p.grad = torch.randn(p.shape, generator: rng);
    }

    static void Copy((string, Tensor)[] from, (string, Tensor)[] to)
    {
        for (int i = 0; i < from.Length; i++) to[i].Item2.grad = from[i].Item2.grad!.clone();
    }

    [Fact]
    public void Host_moments_in_a_small_window_give_the_same_bits_as_moments_beside_the_parameters()
    {
        var onDevice = Parameters(3);
        var onHost = Parameters(3);
        using var dev = new AdamW(onDevice, lr: 0.01, weightDecay: 0.1);
        using var host = new AdamW(onHost, lr: 0.01, weightDecay: 0.1, momentsOnHost: true, hostWindowElements: 8);
        Assert.True(host.MomentsOnHost);
        Assert.False(dev.MomentsOnHost);
        using var rng = new Generator(4);
        for (int step = 0; step < 4; step++)
        {
            SetGrads(onDevice, rng);
            Copy(onDevice, onHost);
            var guard = new MultiTensorAdamW.Guard(torch.tensor(new[] { 1.5f, 3.0f }), MaxNorm: 0.3);   // clips (norm 3 > 0.3)
            Assert.Equal(dev.StepOnce(guard), host.StepOnce(guard));
            for (int i = 0; i < onDevice.Length; i++)
                Assert.True(onDevice[i].Item2.eq(onHost[i].Item2).all().item<bool>(), $"step {step}: parameter {onDevice[i].Item1} differs");
        }
        // Groups of whole parameters within max(8, largest = 15) values: [a], [b], [c d e] = 3 groups.
        Assert.Equal(3, host.HostWindow.Groups);
        Assert.Equal(2 * 15 * 4, host.HostWindow.WindowBytes);
        var (hs, hStep) = host.Save();
        var (ds, dStep) = dev.Save();
        Assert.Equal(dStep, hStep);
        Assert.Equal(ds.Keys.OrderBy(k => k), hs.Keys.OrderBy(k => k));
        foreach (var k in ds.Keys) Assert.True(ds[k].eq(hs[k]).all().item<bool>(), $"moment {k} differs");
    }

    [Fact]
    public void A_non_finite_guard_skips_every_group_and_the_moments_stay()
    {
        var ps = Parameters(5);
        using var opt = new AdamW(ps, lr: 0.01, momentsOnHost: true, hostWindowElements: 4);
        using var rng = new Generator(6);
        SetGrads(ps, rng);
        opt.StepOnce();
        var before = ps.Select(p => p.Item2.detach().clone()).ToArray();
        var (moments, _) = opt.Save();
        SetGrads(ps, rng);
        var r = opt.StepOnce(new MultiTensorAdamW.Guard(torch.tensor(new[] { float.NaN, 1f }), MaxNorm: 0));
        Assert.Equal(MultiTensorAdamW.Result.Skipped, r);
        Assert.Equal(1, opt.Step);
        for (int i = 0; i < ps.Length; i++) Assert.True(before[i].eq(ps[i].Item2).all().item<bool>());
        var (after, _) = opt.Save();
        foreach (var k in moments.Keys) Assert.True(moments[k].eq(after[k]).all().item<bool>(), $"moment {k} moved");
    }

    /// <summary>The checkpoint's state is the same tensors either way, so a run can resume with the moments moved
    /// (the key is free on resume) and continue bit for bit.</summary>
    [Fact]
    public void A_checkpoint_of_device_moments_resumes_with_host_moments_bit_for_bit()
    {
        var a = Parameters(7);
        var b = Parameters(7);
        using var optA = new AdamW(a, lr: 0.05);
        using var rng = new Generator(8);
        for (int i = 0; i < 2; i++) { SetGrads(a, rng); optA.StepOnce(); }
        var (state, step) = optA.Save();
        using (torch.no_grad()) for (int i = 0; i < a.Length; i++) b[i].Item2.copy_(a[i].Item2);
        using var optB = new AdamW(b, lr: 0.05, momentsOnHost: true, hostWindowElements: 6);
        optB.Load(state, step);
        for (int s = 0; s < 3; s++)
        {
            SetGrads(a, rng);
            Copy(a, b);
            optA.StepOnce();
            optB.StepOnce();
        }
        for (int i = 0; i < a.Length; i++) Assert.True(a[i].Item2.eq(b[i].Item2).all().item<bool>(), $"parameter {a[i].Item1} differs");
    }

    [Fact]
    public void A_window_below_one_value_is_refused()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new HostMoments(FusedKernels.Reference().AdamW, 0));
        Assert.Contains("windowElements", ex.Message);
    }
}
