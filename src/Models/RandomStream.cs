using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// An explicit, counter-based stream of random numbers for training-time randomness (dropout masks), owned by whoever
/// creates it (a training run) instead of torch's process-wide generators. Draw k of a stream seeded s hashes the
/// counters 0, 1, 2, ... of a key derived from (s, k) with SplitMix64 (Steele, Lea &amp; Flood 2014, "Fast Splittable
/// Pseudorandom Number Generators"; the finalizer is the mixing function of java.util.SplittableRandom), computed
/// with tensor ops on the device of the draw.
/// Why not a torch.Generator: TorchSharp 0.107 creates every Generator on the CPU whatever device it is given
/// (THSGenerator_new ignores the device), and a CPU generator cannot drive a CUDA op. A counter-based stream has
/// other virtues: its whole state is two numbers (<see cref="State"/>), so activation checkpointing saves and
/// restores it for free, and a draw gives the same bits on every device. The fused kernel (Kernels.FusedDropout,
/// Cuda/dropout.cu) computes the same bits from the draw's key (<see cref="NextKey"/>) inside the dropout itself;
/// the tensor ops here (<see cref="MaskOf"/>) are its reference.
/// </summary>
public sealed class RandomStream
{
    /// <summary>The whole state: the seed and how many draws were made since seeding.</summary>
    public readonly record struct Position(long Seed, long Draws);

    const ulong Gamma = 0x9E3779B97F4A7C15UL;   // SplitMix64's increment: 2^64 / golden ratio, odd
    const ulong Mix1 = 0xBF58476D1CE4E5B9UL;
    const ulong Mix2 = 0x94D049BB133111EBUL;

    // Shift amounts and masks as 0-dim tensors, per device: TorchSharp's bitwise ops take tensors only, and creating
    // them for every draw would copy from the host each time.
    readonly Dictionary<string, Constants> _constants = new();

    public RandomStream(long seed = 0) => State = new Position(seed, 0);

    public Position State { get; private set; }

    /// <summary>Starts the stream afresh from <paramref name="seed"/>.</summary>
    public void Reseed(long seed) => State = new Position(seed, 0);

    /// <summary>Puts the stream back where it was (activation checkpointing replays a forward this way).</summary>
    public void Restore(Position state) => State = state;

    /// <summary>
    /// A bool tensor of <paramref name="shape"/> on <paramref name="device"/>, each element false (dropped) with
    /// probability <see cref="DropProbability"/>(<paramref name="p"/>), independently. Every element gets 16
    /// uniform bits (four per 64-bit hash), so the drop probability is p rounded to a multiple of 2^-16.
    /// </summary>
    public Tensor KeepMask(long[] shape, double p, Device device) => MaskOf(NextKey(), shape, DropThreshold(p), device);

    /// <summary>The key of the next draw (a hash of the seed and the draw count), advancing the stream by one draw:
    /// what a fused kernel takes in place of a mask.</summary>
    public ulong NextKey()
    {
        ulong key = Finalize((ulong)State.Seed * Gamma + Finalize((ulong)State.Draws + 1));
        State = State with { Draws = State.Draws + 1 };
        return key;
    }

    /// <summary>
    /// The keep mask of the draw with key <paramref name="key"/>: element i is kept when 16 bits of the SplitMix64
    /// hash of counter i / 4 + 1 (bits 16 (i % 4) and up) are at least <paramref name="threshold"/>.
    /// </summary>
    public Tensor MaskOf(ulong key, long[] shape, long threshold, Device device)
    {
        long numel = shape.Aggregate(1L, (a, b) => a * b);
        long words = (numel + 3) / 4;
        var c = ConstantsOn(device);
        using var scope = NewDisposeScope();
        var z = torch.arange(1, words + 1, 1, ScalarType.Int64, device);                 // (words) counters 1..n
        z.mul_(unchecked((long)Gamma)).add_(unchecked((long)key));                        // SplitMix64 states
        z = z.bitwise_xor(ShiftRight(z, c, 0)).mul_(unchecked((long)Mix1));
        z = z.bitwise_xor(ShiftRight(z, c, 1)).mul_(unchecked((long)Mix2));
        z = z.bitwise_xor(ShiftRight(z, c, 2));                                            // (words) uniform 64-bit
        var lanes = z.unsqueeze(-1).bitwise_right_shift(c.LaneShifts).bitwise_and_(c.LaneMask); // (words, 4) 16-bit each
        var keep = lanes.reshape(-1).narrow(0, 0, numel).ge(threshold);                   // (numel)
        return keep.reshape(shape).MoveToOuterDisposeScope();
    }

    /// <summary>The drop probability a mask for <paramref name="p"/> has: p rounded to a multiple of 2^-16.</summary>
    public static double DropProbability(double p) => DropThreshold(p) / 65536.0;

    /// <summary>Keep an element when its 16 random bits are at least this: round(p * 65536).</summary>
    public static long DropThreshold(double p) => (long)Math.Round(p * 65536);

    /// <summary>Logical right shift of int64 z by the k-th mixer shift (torch's shift is arithmetic: mask the sign fill).</summary>
    static Tensor ShiftRight(Tensor z, Constants c, int k) => z.bitwise_right_shift(c.MixShifts[k]).bitwise_and_(c.MixMasks[k]);

    /// <summary>SplitMix64's finalizer on the host (for the per-draw key).</summary>
    static ulong Finalize(ulong z)
    {
        z = (z ^ (z >> 30)) * Mix1;
        z = (z ^ (z >> 27)) * Mix2;
        return z ^ (z >> 31);
    }

    sealed record Constants(Tensor[] MixShifts, Tensor[] MixMasks, Tensor LaneShifts, Tensor LaneMask);

    Constants ConstantsOn(Device device)
    {
        string key = device.ToString();
        if (_constants.TryGetValue(key, out var c)) return c;
        Tensor Long(long v) => torch.tensor(v, ScalarType.Int64, device).DetachFromDisposeScope();
        int[] shifts = [30, 27, 31];
        c = new Constants(
            shifts.Select(s => Long(s)).ToArray(),
            shifts.Select(s => Long((long)(ulong.MaxValue >> s))).ToArray(),
            torch.tensor(new long[] { 0, 16, 32, 48 }, ScalarType.Int64, device).DetachFromDisposeScope(),
            Long(0xFFFF));
        _constants[key] = c;
        return c;
    }
}
