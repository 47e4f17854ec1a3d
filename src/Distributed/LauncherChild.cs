using System.Globalization;

namespace QLoraNet.Distributed;

/// <summary>
/// The child's side of <see cref="ProcessLauncher"/>: when <c>QLORANET_LAUNCHER_PID</c> says this process was
/// started by our launcher, leave the terminal's process group (so a Ctrl-C reaches the launcher alone, which passes
/// exactly one SIGINT to every rank; otherwise each rank would get the terminal's and the launcher's and abort), and
/// watch the launcher: if it dies (SIGKILL, OOM killer), the ranks must not train on unsupervised, so
/// <c>onOrphaned</c> is called (the CLI exits). Under torchrun nothing happens: torchrun forwards signals itself.
/// </summary>
public static class LauncherChild
{
    /// <summary>
    /// Call first thing in Main, before anything touches the console or signals. In a rank started by our launcher,
    /// an ignored SIGINT is set back to its default action. Why: a process started in the background by a
    /// non-interactive shell (`cmd &amp;`, CI scripts) or by a test host ignores SIGINT, and its children inherit that
    /// across exec; .NET respects an inherited ignore and then installs no handler of its own, so the rank's Ctrl-C
    /// handling never runs and the one SIGINT the launcher forwards is silently dropped: the ranks wait on and the
    /// launch never ends. A rank has left the terminal's process group (<see cref="Attach"/>), so the launcher's
    /// forwarded SIGINT is the only one it can get; honouring it is what the launcher asked for. Returns whether
    /// SIGINT had been ignored.
    /// </summary>
    public static bool AcceptForwardedInterrupts()
    {
        if (Environment.GetEnvironmentVariable(ProcessLauncher.LauncherPidVar) is null || !PosixProcess.Supported) return false;
        return PosixProcess.StopIgnoring(PosixProcess.SigInt);
    }

    /// <summary>Returns whether this process was started by our launcher.</summary>
    public static bool Attach(Action onOrphaned)
    {
        if (Environment.GetEnvironmentVariable(ProcessLauncher.LauncherPidVar) is not { } text
            || !int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int launcher)) return false;
        if (!PosixProcess.Supported) return true;
        PosixProcess.LeaveTerminalGroup();
        if (PosixProcess.ParentId() != launcher)
        {
            onOrphaned();
            return true;
        }
        var watcher = new Thread(() =>
        {
            while (PosixProcess.ParentId() == launcher) Thread.Sleep(500);
            onOrphaned();
        }) { IsBackground = true, Name = "launcher watch" };
        watcher.Start();
        return true;
    }
}
