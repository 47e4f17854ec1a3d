namespace QLoraNet.Tests.Fuzz;

/// <summary>
/// Runs one input through a reader and judges the outcome: success or a clean one-line error is fine; any other
/// exception is a crash, not finishing within <see cref="Timeout"/> a hang, and allocating more than
/// <see cref="MaxAllocatedBytes"/> (managed) a runaway. Returns null when fine, else what went wrong.
/// </summary>
public static class FuzzCase
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    /// <summary>Generous next to what the readers need for a 4 MB input (a few times its size), tiny next to the
    /// gigabytes a runaway reaches.</summary>
    public const long MaxAllocatedBytes = 512L << 20;

    public static string? Check(FuzzTarget target, byte[] input)
    {
        File.WriteAllBytes(target.FileName, input);
        long before = GC.GetTotalAllocatedBytes(precise: true);
        Exception? error = null;
        var run = Task.Run(() =>
        {
            try { target.Run(target.FileName); }
            catch (Exception e) { error = e; }
        });
        if (!run.Wait(Timeout)) return $"hang: no result after {Timeout.TotalSeconds} s";
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        if (allocated > MaxAllocatedBytes) return $"runaway: allocated {allocated / (1 << 20)} MiB for a {input.Length}-byte input";
        if (error is null || FuzzTargets.IsCleanError(error, out _)) return null;
        FuzzTargets.IsCleanError(error, out var why);
        return $"{why}: {error.GetType().Name}: {Clip(error.Message)}\n{error.StackTrace}";
    }

    static string Clip(string s) => s.Length <= 300 ? s : s[..300] + "...";
}
