namespace QLoraNet.Models;

/// <summary>
/// Counts a model's forward passes, so that a module can keep a value for the length of one pass and never use it
/// in the next: LoRA's factors cast to the compute dtype (Peft.LoraFactorCasts) are made once per pass and reused by the
/// pass's checkpointed recomputation in backward, instead of cast again per call. The parameters change only
/// between passes (the optimizer, a load), and every pass starts with <see cref="Next"/>. One counter per model.
/// </summary>
public sealed class ForwardPasses
{
    long current;

    /// <summary>The pass now running (or the last one).</summary>
    public long Current => Interlocked.Read(ref current);

    /// <summary>Starts a pass: what was kept for the previous one is stale from here.</summary>
    public void Next() => Interlocked.Increment(ref current);
}
