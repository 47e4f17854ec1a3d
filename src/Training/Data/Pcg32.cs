namespace QLoraNet.Training.Data;

/// <summary>
/// PCG-XSH-RR 64/32 (O'Neill 2014, pcg-random.org): a small generator whose output depends only on (seed, stream),
/// unlike System.Random whose seeded sequence .NET does not promise to keep. The shuffles of a run are therefore
/// the same on every machine and every .NET version, and can be recomputed to resume mid-epoch.
/// </summary>
public sealed class Pcg32
{
    const ulong Multiplier = 6364136223846793005UL;
    ulong state;
    readonly ulong increment;

    public Pcg32(ulong seed, ulong stream)
    {
        increment = (stream << 1) | 1; // must be odd
        state = 0;
        NextUInt();
        state += seed;
        NextUInt();
    }

    public uint NextUInt()
    {
        ulong old = state;
        state = unchecked(old * Multiplier + increment);
        uint xorShifted = (uint)(((old >> 18) ^ old) >> 27);
        int rot = (int)(old >> 59);
        return (xorShifted >> rot) | (xorShifted << (-rot & 31));
    }

    /// <summary>Uniform in [0, bound), without modulo bias (rejects the low values that wrap unevenly).</summary>
    public int NextBelow(int bound)
    {
        if (bound <= 0) throw new ArgumentOutOfRangeException(nameof(bound));
        uint b = (uint)bound;
        uint threshold = unchecked((uint)-b) % b;
        while (true)
        {
            uint r = NextUInt();
            if (r >= threshold) return (int)(r % b);
        }
    }

    /// <summary>A permutation of 0..n-1 (Fisher-Yates).</summary>
    public int[] Permutation(int n)
    {
        var p = Enumerable.Range(0, n).ToArray();
        for (int i = n - 1; i > 0; i--)
        {
            int j = NextBelow(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }
}
