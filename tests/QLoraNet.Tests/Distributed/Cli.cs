using System.Diagnostics;
using System.Text;
using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

/// <summary>Thread-safe recorder of a process's output, with a wait for a given fragment.</summary>
public sealed class Lines : TextWriter
{
    readonly StringBuilder _text = new();
    public override Encoding Encoding => Encoding.UTF8;
    public override void Write(char value) { lock (_text) { _text.Append(value); Monitor.PulseAll(_text); } }
    public override void Write(string? value) { lock (_text) { _text.Append(value); Monitor.PulseAll(_text); } }
    public override string ToString() { lock (_text) return _text.ToString(); }

    public bool WaitFor(string fragment, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        lock (_text)
            while (!_text.ToString().Contains(fragment))
                if (!Monitor.Wait(_text, until - DateTime.UtcNow > TimeSpan.Zero ? until - DateTime.UtcNow : TimeSpan.Zero)) return false;
        return true;
    }
}

/// <summary>This build's CLI as real processes: run once (it may launch ranks itself), or as ranks of a
/// <see cref="ProcessLauncher"/> held by the test (which then knows their process ids).</summary>
public static class Cli
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "QLoraNet.dll");
    public static string Dotnet => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h ? h : "dotnet";

    /// <summary>
    /// Runs `dotnet QLoraNet.dll ARGS` to the end (killing it and its ranks after <paramref name="timeout"/>), with one
    /// CPU thread, as the ranks of a launch have (OMP_NUM_THREADS=1): libtorch's CPU matmuls split their sums by
    /// thread count, so a one-process reference must run with the ranks' thread count to match them bit for bit.
    /// </summary>
    public static (int Code, string Out, string Err) Run(IEnumerable<string> args, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(Dotnet) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment[ProcessLauncher.OmpThreadsVar] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout ?? TimeSpan.FromSeconds(240)))
        {
            p.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"timed out: {string.Join(" ", args)}\n{stdout.Result}\n{stderr.Result}");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Starts <paramref name="spec"/>'s ranks, runs <paramref name="during"/> (which may signal them), waits
    /// at most <paramref name="timeout"/> (default 240 s) after it: ranks still running then are killed and the test
    /// fails with their output, so a launch that never ends fails rather than hangs the suite.</summary>
    public static (int Code, string Out, string Err, IReadOnlyList<int> Pids) Launch(LaunchSpec spec, Action<ProcessLauncher, Lines>? during = null,
        TimeSpan? timeout = null)
    {
        var stdout = new Lines();
        var stderr = new Lines();
        using var launcher = new ProcessLauncher(spec, stdout, stderr); // disposing kills the ranks still running
        launcher.Start();
        during?.Invoke(launcher, stdout);
        var wait = Task.Run(launcher.Wait);
        var limit = timeout ?? TimeSpan.FromSeconds(240);
        if (!wait.Wait(limit))
            throw new Xunit.Sdk.XunitException($"the launch did not end within {limit.TotalSeconds:0} s (ranks killed)\n{stdout}\n{stderr}");
        return (wait.Result, stdout.ToString(), stderr.ToString(), launcher.ProcessIds);
    }

    public static void AssertAllExited(IEnumerable<int> pids)
    {
        foreach (int pid in pids)
        {
            try
            {
                using var p = Process.GetProcessById(pid);
                Assert.True(p.HasExited, $"process {pid} still runs");
            }
            catch (ArgumentException) { } // gone
        }
    }
}
