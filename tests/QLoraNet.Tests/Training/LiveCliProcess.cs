using System.Diagnostics;
using System.Runtime.InteropServices;

namespace QLoraNet.Tests.Training;

/// <summary>
/// The CLI as a real child process (the app host built beside the tests), its output collected line by line as it
/// comes, so a test can act on what it prints and send it signals.
/// </summary>
public sealed class LiveCliProcess : IDisposable
{
    readonly Process _process;
    readonly List<string> _stdout = [], _stderr = [];

    public LiveCliProcess(string workingDirectory, params string[] args)
    {
        string host = Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "QLoraNet.exe" : "QLoraNet");
        var psi = new ProcessStartInfo(host)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // One libtorch thread: the run is tiny, and on a loaded machine idle OpenMP workers spinning for work cost
        // more CPU than the steps themselves.
        psi.Environment["OMP_NUM_THREADS"] = "1";
        foreach (var a in args) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi };
        _process.OutputDataReceived += (_, e) => { if (e.Data is { } line) lock (_stdout) { _stdout.Add(line); OnLine?.Invoke(line); } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is { } line) lock (_stderr) _stderr.Add(line); };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Called on a reader thread with each stdout line as it arrives (set right after construction).</summary>
    public Action<string>? OnLine { get; set; }

    public int Id => _process.Id;

    public IReadOnlyList<string> Stdout { get { lock (_stdout) return _stdout.ToList(); } }
    /// <summary>What it wrote to stderr, less the start line naming the libtorch it loaded (LibTorchProbe), which every
    /// run prints: the tests here check that an error is one line and that a clean stop prints none.</summary>
    public IReadOnlyList<string> Stderr { get { lock (_stderr) return _stderr.Where(l => !l.StartsWith("libtorch ", StringComparison.Ordinal)).ToList(); } }

    /// <summary>The exit code once it has exited, else null (for failure messages).</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>Everything it wrote to stderr, the libtorch start line included (for failure messages).</summary>
    public IReadOnlyList<string> AllStderr { get { lock (_stderr) return _stderr.ToList(); } }

    /// <summary>Waits (at most <paramref name="timeout"/>) until stdout has a line matching <paramref name="predicate"/>.</summary>
    public bool WaitForLine(Func<string, bool> predicate, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (Stdout.Any(predicate)) return true;
            if (_process.HasExited)
            {
                _process.WaitForExit();   // the redirected output may still be on its way: drain it before deciding
                return Stdout.Any(predicate);
            }
            Thread.Sleep(20);
        }
        return false;
    }

    /// <summary>The exit code, after waiting for the process (and its output) to end.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
        {
            _process.Kill(entireProcessTree: true);
            throw new TimeoutException($"the CLI did not exit within {timeout.TotalSeconds} s; stdout: {string.Join(" | ", Stdout.TakeLast(5))}");
        }
        _process.WaitForExit();   // drains the redirected output
        return _process.ExitCode;
    }

    /// <summary>Sends a POSIX signal (SIGTERM = 15); Kill() sends SIGKILL.</summary>
    public void Signal(int signal)
    {
        // A short run may already have ended on its own (the caller then sees its exit code): nothing to signal.
        if (_process.HasExited) return;
        if (SysKill(_process.Id, signal) != 0 && !_process.HasExited)
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    public void Kill() => _process.Kill();

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    static extern int SysKill(int pid, int signal);

    public void Dispose()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
