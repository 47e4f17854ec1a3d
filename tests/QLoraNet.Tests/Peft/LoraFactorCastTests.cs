using QLoraNet.Peft;
using QLoraNet.Tests.Models.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

/// <summary>
/// LoRA's factors cast to the compute dtype are kept for one forward pass of the model (LoraLinear.Factors): a
/// change to A or B between passes must show in the next pass, exactly as the uncached casts (the graph path) see it.
/// </summary>
[Trait("tier", "unit")]
public class LoraFactorCastTests
{
    [Fact]
    public void A_factor_changed_between_passes_is_seen_by_the_next_pass()
    {
        using var built = FamilyLora.Build("llama3", FamilyLora.Dense, FamilyLora.AllLinear);
        var model = built.Model;
        var loras = model.modules().OfType<LoraLinear>().ToList();
        Assert.All(loras, l => Assert.NotNull(l.Passes));
        var ids = FamilyReference.Of("llama3").HeldoutIds.Take(16).ToArray();
        using var input = tensor(ids, [1, ids.Length]);

        using var before = Logits(cached: true);
        using (no_grad())
            foreach (var l in loras) l.B.fill_(0.01);                     // in place: same storage, new values
        using var cached = Logits(cached: true);                          // casts kept per pass
        using var fresh = Logits(cached: false);                          // casts in the graph, made per call
        Assert.False(before.eq(cached).all().item<bool>(), "the change to B did not reach the next pass");
        // The two forwards differ in more than the casts: without a graph q/k/v (and gate/up) share one down GEMM,
        // a different summation order than three, so they agree to fp32 rounding of the logits (64 units in the last
        // place of the largest, for dot products of the model's widths), and bit for bit only where a CPU's BLAS
        // happens to sum alike. A stale cast (B before the fill) would be off by the whole change.
        double bound = 64 * Math.Pow(2, -23) * fresh.abs().max().item<float>();
        double diff = (cached - fresh).abs().max().item<float>();
        Assert.True(diff <= bound, $"cached casts differ from fresh ones by {diff:E2} (bound {bound:E2})");
        Assert.True((before - fresh).abs().max().item<float>() > 1000 * bound, "the change to B is too small to tell from rounding");

        Tensor Logits(bool cached)
        {
            using var mode = cached ? no_grad() : enable_grad();
            using var logits = model.forward(input);
            return logits.detach().clone();
        }
    }
}
