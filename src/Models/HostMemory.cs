using System.Diagnostics;

namespace QLoraNet.Models;

/// <summary>
/// The process's resident memory on the host. On Linux from /proc/self/status: VmRSS now and VmHWM, the peak since
/// start or since the last <see cref="ResetPeak"/>. Elsewhere the peak is <see cref="Process.PeakWorkingSet64"/>
/// (Windows: the peak working set; it cannot be reset) and the current value <see cref="Environment.WorkingSet"/>.
/// </summary>
public static class HostMemory
{
    /// <summary>Resident bytes now; null where /proc is absent (callers that need a number use <see cref="ResidentOrWorkingSet"/>).</summary>
    public static long? ResidentBytes => Read("VmRSS:");

    /// <summary>Peak resident bytes (VmHWM); null where /proc is absent.</summary>
    public static long? PeakResidentBytes => Read("VmHWM:");

    /// <summary>Resident bytes now, on any OS.</summary>
    public static long ResidentOrWorkingSet => ResidentBytes ?? Environment.WorkingSet;

    /// <summary>Peak resident bytes, on any OS: VmHWM on Linux, else the process's peak working set.</summary>
    public static long PeakOrPeakWorkingSet
    {
        get
        {
            if (PeakResidentBytes is { } peak) return peak;
            using var p = Process.GetCurrentProcess();
            return p.PeakWorkingSet64;
        }
    }

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
