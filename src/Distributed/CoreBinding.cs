using System.Globalization;
using System.Runtime.InteropServices;

namespace QLoraNet.Distributed;

/// <summary>
/// Gives each rank on a host its own share of the CPUs the processes may use (Linux). A rank's training thread is
/// the GPU's feeder (the step is host-bound: host and device time per step are about equal), and two ranks left to
/// the scheduler slow each other down even without any collective: on one 2 x H200 host (32 CPUs, 2026-11-30,
/// docs/BENCHMARKS.md) two independent one-GPU runs at once took 192 and 252 ms a step, against 173 ms alone; the same
/// two runs confined to halves of the CPUs by <c>taskset</c> took 178 and 175 ms. So each rank binds itself to a
/// contiguous block of the CPUs it may run on (its affinity mask as started: a Slurm or container limit, or the
/// user's own <c>taskset</c>, is split, never widened): block r of LOCAL_WORLD_SIZE equal blocks, in CPU order, the
/// leftover CPUs to no one. That is DeepSpeed's <c>--bind_cores_to_rank</c>. Every thread the process has is bound, and
/// later threads inherit their creator's mask. Off when <c>QLORANET_BIND_CORES=0</c>, when the launcher did not say
/// how many ranks share the host (LOCAL_WORLD_SIZE), for a single rank, or when a share would be fewer than
/// <see cref="MinimumPerRank"/> CPUs (the feeding thread and the runtime's own threads would then compete in it).
/// </summary>
public static partial class CoreBinding
{
    public const string Variable = "QLORANET_BIND_CORES";

    /// <summary>The fewest CPUs a share may have.</summary>
    public const int MinimumPerRank = 2;

    /// <summary>The CPUs of rank <paramref name="localRank"/> of <paramref name="localWorldSize"/>: block r of equal
    /// contiguous blocks of <paramref name="allowed"/> (sorted), or empty when a block would have fewer than
    /// <see cref="MinimumPerRank"/>.</summary>
    public static IReadOnlyList<int> Share(IReadOnlyList<int> allowed, int localRank, int localWorldSize)
    {
        if (localWorldSize < 1 || localRank < 0 || localRank >= localWorldSize)
            throw new ArgumentOutOfRangeException(nameof(localRank), $"local rank {localRank} of {localWorldSize}");
        var cpus = allowed.Distinct().Order().ToArray();
        int per = cpus.Length / localWorldSize;
        return per < MinimumPerRank ? [] : cpus.Skip(localRank * per).Take(per).ToArray();
    }

    /// <summary>Binds this process (every thread) to its share when the rules above allow; returns what it did, or
    /// why not, in one line for the log; null when binding does not apply (one rank, or not asked for).</summary>
    public static string? Apply(DistributedEnvironment env, Func<string, string?>? getVariable = null)
    {
        getVariable ??= Environment.GetEnvironmentVariable;
        if (!env.IsDistributed || env.LocalWorldSize is not { } local || local < 2) return null;
        if (getVariable(Variable) is "0" or "false" or "no") return null;
        if (!OperatingSystem.IsLinux()) return $"rank {env.Rank}: CPU binding is Linux only; not bound";
        var allowed = Allowed();
        if (allowed is null) return $"rank {env.Rank}: could not read this process's CPU affinity; not bound";
        var share = Share(allowed, env.LocalRank, local);
        if (share.Count == 0) return $"rank {env.Rank}: {allowed.Count} CPUs for {local} ranks (fewer than {MinimumPerRank} each); not bound";
        int bound = 0, failed = 0;
        foreach (int tid in Threads())
            if (Set(tid, share)) bound++;
            else failed++;
        return failed > 0 && bound == 0
            ? $"rank {env.Rank}: binding to CPUs {Ranges(share)} failed; not bound"
            : $"rank {env.Rank}: bound to CPUs {Ranges(share)} ({share.Count} of {allowed.Count}; {Variable}=0 turns this off)";
    }

    /// <summary>"0-15,32-47" for a set of CPU numbers.</summary>
    public static string Ranges(IReadOnlyList<int> cpus)
    {
        var sorted = cpus.Distinct().Order().ToArray();
        var parts = new List<string>();
        for (int i = 0; i < sorted.Length;)
        {
            int j = i;
            while (j + 1 < sorted.Length && sorted[j + 1] == sorted[j] + 1) j++;
            parts.Add(i == j ? sorted[i].ToString(CultureInfo.InvariantCulture) : $"{sorted[i]}-{sorted[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }

    // cpu_set_t of 8192 CPUs: larger than any host's count, and what the kernel checks against its own (smaller) size.
    const int MaskBytes = 1024;

    [LibraryImport("libc", EntryPoint = "sched_getaffinity", SetLastError = true)]
    private static unsafe partial int GetAffinity(int pid, nuint size, byte* mask);

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static unsafe partial int SetAffinity(int pid, nuint size, byte* mask);

    static unsafe List<int>? Allowed()
    {
        var mask = stackalloc byte[MaskBytes];
        new Span<byte>(mask, MaskBytes).Clear();
        if (GetAffinity(0, MaskBytes, mask) != 0) return null;
        var cpus = new List<int>();
        for (int i = 0; i < MaskBytes * 8; i++)
            if ((mask[i >> 3] & (1 << (i & 7))) != 0) cpus.Add(i);
        return cpus;
    }

    static unsafe bool Set(int tid, IReadOnlyList<int> cpus)
    {
        var mask = stackalloc byte[MaskBytes];
        new Span<byte>(mask, MaskBytes).Clear();
        foreach (int c in cpus) mask[c >> 3] |= (byte)(1 << (c & 7));
        return SetAffinity(tid, MaskBytes, mask) == 0;
    }

    /// <summary>This process's threads (Linux: /proc/self/task), the calling one included.</summary>
    static IEnumerable<int> Threads()
    {
        IEnumerable<string> dirs;
        try { dirs = Directory.EnumerateDirectories("/proc/self/task").ToList(); }
        catch (IOException) { yield break; }
        catch (UnauthorizedAccessException) { yield break; }
        foreach (var d in dirs)
            if (int.TryParse(Path.GetFileName(d), NumberStyles.None, CultureInfo.InvariantCulture, out int tid)) yield return tid;
    }
}
