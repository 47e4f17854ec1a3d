using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>Picks the next token from last-position logits: greedy or temperature + top-p sampling.</summary>
public static class TokenSampler
{
    /// <param name="logits">(vocab) fp32 logits of the last position.</param>
    /// <param name="generator">seeded generator on the logits' device; unused when greedy.</param>
    public static int Next(Tensor logits, double temperature, double topP, Generator? generator)
    {
        using var scope = NewDisposeScope();
        if (temperature == 0) return (int)logits.argmax().item<long>();

        var probs = (logits / temperature).softmax(-1);
        var (sorted, order) = probs.sort(descending: true);                    // (vocab) each
        // Keep a token while the probability mass before it is still below topP: the nucleus is the smallest
        // prefix whose mass reaches topP, and the most likely token is always kept.
        var massBefore = sorted.cumsum(0) - sorted;
        var kept = sorted.masked_fill(massBefore.ge(topP), 0.0);
        // multinomial normalises the weights itself.
        var pick = kept.multinomial(1, generator: generator);                  // (1) index into the sorted order
        return (int)order[pick].item<long>();
    }
}
