namespace QLoraNet.Models;

/// <summary>How to continue a prompt. Temperature 0 means greedy decoding (argmax, deterministic); above 0 the
/// logits are divided by it and sampled from the smallest set of tokens whose probability reaches TopP
/// (nucleus sampling, Holtzman et al. 2019, arXiv:1904.09751) with a generator seeded by Seed.</summary>
public sealed record GenerationOptions(
    int MaxNewTokens = 64,
    double Temperature = 0.0,
    double TopP = 1.0,
    ulong Seed = 0,
    IReadOnlyList<int>? StopIds = null)
{
    /// <summary>Throws a one-line error for values that cannot work.</summary>
    public GenerationOptions Validated()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"max new tokens must be >= 0, got {MaxNewTokens}");
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new ArgumentException($"temperature must be >= 0 (0 = greedy), got {Temperature}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {TopP}");
        return this;
    }
}
