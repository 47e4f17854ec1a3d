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
