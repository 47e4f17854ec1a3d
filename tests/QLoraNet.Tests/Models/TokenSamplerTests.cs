using QLoraNet.Models;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

[Trait("tier", "unit")]
public class TokenSamplerTests
{
    // Probabilities 0.5, 0.3, 0.15, 0.05 as logits.
    static Tensor Logits() => tensor(new[] { 0.5f, 0.3f, 0.15f, 0.05f }).log();

    static int[] Counts(double temperature, double topP, ulong seed, int draws = 2000)
    {
        using var logits = Logits();
        using var gen = new Generator(seed);
        var counts = new int[4];
        for (int i = 0; i < draws; i++) counts[TokenSampler.Next(logits, temperature, topP, gen)]++;
        return counts;
    }

    [Fact]
    public void Temperature_zero_is_argmax()
    {
        using var logits = tensor(new[] { 0.1f, 2.0f, 1.9f });
        Assert.Equal(1, TokenSampler.Next(logits, 0, 1.0, null));
    }

    [Fact]
    public void Top_p_keeps_the_smallest_prefix_reaching_p()
    {
        // Mass before each token: 0, 0.5, 0.8, 0.95. With p = 0.75 the nucleus is {0, 1} (0.5 < 0.75, 0.8 >= 0.75).
        var counts = Counts(1.0, 0.75, seed: 7);
        Assert.Equal(0, counts[2] + counts[3]);
        // Renormalised 0.5/0.8 = 0.625 for token 0; 2000 draws: standard deviation ~22.
        Assert.InRange(counts[0], 1250 - 110, 1250 + 110);
    }

    [Fact]
    public void Top_p_below_the_first_probability_is_greedy()
    {
        var counts = Counts(1.0, 0.3, seed: 1, draws: 200);
        Assert.Equal(200, counts[0]);
    }

    [Fact]
    public void Same_seed_same_draws_and_full_nucleus_samples_every_token()
    {
        Assert.Equal(Counts(1.0, 1.0, seed: 42), Counts(1.0, 1.0, seed: 42));
        Assert.All(Counts(1.0, 1.0, seed: 42), c => Assert.True(c > 0));
    }
}
