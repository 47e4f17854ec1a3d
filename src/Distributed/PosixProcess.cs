using System.Runtime.InteropServices;

namespace QLoraNet.Distributed;

/// <summary>The POSIX process calls .NET has no API for: sending a signal other than SIGKILL, leaving the
/// terminal's process group, asking for the parent. Linux and macOS share these signal numbers.</summary>
internal static partial class PosixProcess
{
    public const int SigInt = 2, SigKill = 9, SigTerm = 15, SigStop = 19; // SIGSTOP on Linux (macOS: 17); tests stop a rank with it

    public static bool Supported => OperatingSystem.IsLinux() || OperatingSystem.IsMacOS();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int KillNative(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "setpgid", SetLastError = true)]
    private static partial int SetPgid(int pid, int pgid);

    [LibraryImport("libc", EntryPoint = "getppid")]
    private static partial int GetPpid();

    [LibraryImport("libc", EntryPoint = "sigaction", SetLastError = true)]
    private static unsafe partial int SigAction(int signal, void* action, void* old);

    [LibraryImport("libc", EntryPoint = "signal")]
    private static partial nint SetDisposition(int signal, nint handler);

    const nint SigDfl = 0, SigIgn = 1; // the same on Linux and macOS

    /// <summary>Sends <paramref name="signal"/>; false when the process is already gone.</summary>
    public static bool Signal(int pid, int signal) => KillNative(pid, signal) == 0;

    /// <summary>Moves this process into a process group of its own, out of the terminal's foreground group, so that
    /// a Ctrl-C reaches only the launcher (which forwards exactly one SIGINT).</summary>
    public static bool LeaveTerminalGroup() => SetPgid(0, 0) == 0;

    public static int ParentId() => GetPpid();

    /// <summary>
    /// Sets <paramref name="signal"/> back to its default action if it is ignored; returns whether it was. Only
    /// "ignored" is changed: a handler (the runtime's own) is left in place.
    /// </summary>
    public static unsafe bool StopIgnoring(int signal)
    {
        // struct sigaction begins with the handler on Linux and macOS; the rest (mask, flags) differs in size, so
        // the query writes into a buffer larger than either (Linux x86-64/arm64: 152 bytes; macOS: 16).
        var old = stackalloc byte[512];
        if (SigAction(signal, null, old) != 0 || *(nint*)old != SigIgn) return false;
        SetDisposition(signal, SigDfl);
        return true;
    }

    public static string SignalName(int signal) => signal switch
    {
        1 => "SIGHUP", 2 => "SIGINT", 6 => "SIGABRT", 9 => "SIGKILL", 11 => "SIGSEGV", 13 => "SIGPIPE", 15 => "SIGTERM",
        _ => $"signal {signal}",
    };
}
