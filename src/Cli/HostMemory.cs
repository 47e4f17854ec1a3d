namespace QLoraNet.Cli;

/// <summary>
/// The process's resident memory from /proc/self/status (Linux): VmRSS now and VmHWM, the peak since start or since
/// the last <see cref="ResetPeak"/>. Null where /proc is absent (Windows, macOS), so callers print nothing there.
/// </summary>
public static class HostMemory
{
    public static long? ResidentBytes => Read("VmRSS:");

    public static long? PeakResidentBytes => Read("VmHWM:");

    /// <summary>Starts a new peak at the current RSS: writing "5" to /proc/self/clear_refs resets VmHWM (Linux 4.0+,
    /// Documentation/filesystems/proc.rst), so a peak can be attributed to one phase such as loading.</summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return false;
        }
    }

    static long? Read(string field)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return null;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal));
        // "VmHWM:	  123456 kB"
        return line is null ? null : long.Parse(line[field.Length..].Trim().Split(' ')[0]) * 1024;
    }
}
