using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace QLoraNet.Distributed;

/// <summary>The signals a launcher passes on to its ranks.</summary>
public enum ForwardedSignal
{
    /// <summary>SIGINT (Ctrl-C): the ranks finish the step, save a checkpoint and exit 130; a second one aborts.</summary>
    Interrupt,

    /// <summary>SIGTERM: the ranks stop at once (no checkpoint beyond the last complete one).</summary>
    Terminate,
}

/// <summary>
/// Our own launcher, behind <c>train CONFIG --gpus N</c>: starts N copies of a command on this host with the
/// variables torchrun would set (<c>RANK</c>, <c>LOCAL_RANK</c> = RANK, <c>WORLD_SIZE</c>, <c>LOCAL_WORLD_SIZE</c>,
/// <c>MASTER_ADDR</c>=127.0.0.1, <c>MASTER_PORT</c> = a free port), plus <c>NCCL_NVLS_ENABLE=0</c> and
/// <c>OMP_NUM_THREADS=1</c> (torchrun's default for several ranks: CPU work is the GPU's feeding) when unset, and
/// <c>QLORANET_LAUNCHER_PID</c> (the child then leaves the terminal's process group and stops if the launcher dies;
/// <see cref="LauncherChild"/>). CUDA_VISIBLE_DEVICES is passed through unchanged: rank r uses the r-th visible GPU.
/// <para>
/// Output: rank 0's standard output passes through as it is (the progress lines); every other line is prefixed
/// "[rank r] ". Faults: when a rank exits non-zero (or dies by a signal), the launcher says which, gives the others
/// <see cref="LaunchSpec.FailureGrace"/> (2 s) to stop by themselves (their collectives notice a dead peer at once
/// and print what they saw), then sends SIGTERM, then SIGKILL after <see cref="LaunchSpec.StopTimeout"/> (10 s), and
/// returns that rank's exit code: at most 12 s from the first failure to the last rank gone. <see cref="Forward"/> passes Ctrl-C / SIGTERM on; when every rank then exits 130, so does the launcher.
/// </para>
/// </summary>
public sealed class ProcessLauncher : IDisposable
{
    public const string LauncherPidVar = "QLORANET_LAUNCHER_PID", OmpThreadsVar = "OMP_NUM_THREADS";
    public const int ExitInterrupted = 130, ExitTerminated = 128 + PosixProcess.SigTerm;

    readonly LaunchSpec _spec;
    readonly TextWriter _stdout, _stderr;
    readonly object _outputLock = new();
    readonly List<Child> _children = [];
    volatile bool _interrupted, _terminated;

    sealed record Child(int Rank, Process Process, Task Pump);

    public ProcessLauncher(LaunchSpec spec, TextWriter stdout, TextWriter stderr)
    {
        if (spec.WorldSize < 1) throw new ArgumentOutOfRangeException(nameof(spec), spec.WorldSize, "world size must be at least 1");
        _spec = spec;
        _stdout = stdout;
        _stderr = stderr;
    }

    /// <summary>The MASTER_PORT the children were given (after <see cref="Start"/>).</summary>
    public int MasterPort { get; private set; }

    /// <summary>The children's process ids by rank (after <see cref="Start"/>).</summary>
    public IReadOnlyList<int> ProcessIds => _children.Select(c => c.Process.Id).ToList();

    /// <summary>Starts every rank; if one cannot start, those started are killed and the error thrown.</summary>
    public void Start()
    {
        if (_children.Count > 0) throw new InvalidOperationException("already started");
        MasterPort = _spec.MasterPort > 0 ? _spec.MasterPort : FreePort();
        try
        {
            for (int rank = 0; rank < _spec.WorldSize; rank++) _children.Add(StartRank(rank));
        }
        catch
        {
            foreach (var c in _children) Kill(c, PosixProcess.SigKill);
            throw;
        }
    }

    Child StartRank(int rank)
    {
        var psi = new ProcessStartInfo(_spec.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // the ranks read nothing; a closed stdin keeps them off the terminal
            UseShellExecute = false,
            WorkingDirectory = _spec.WorkingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var a in _spec.Arguments) psi.ArgumentList.Add(a);
        var env = psi.Environment;
        // Our MASTER_PORT is free for the rendezvous itself; overrides meant for torchrun do not apply.
        env.Remove(DistributedEnvironment.RendezvousPortVar);
        env.Remove(DistributedEnvironment.TorchElasticAgentStoreVar);
        foreach (var (k, v) in DistributedEnvironment.ChildVariables(rank, rank, _spec.WorldSize, _spec.WorldSize, _spec.MasterAddr, MasterPort)) env[k] = v;
        if (!env.ContainsKey(NcclCollectives.NvlsVar)) env[NcclCollectives.NvlsVar] = "0";
        // As torchrun: N ranks each starting one CPU thread per core would oversubscribe the host.
        if (_spec.WorldSize > 1 && !env.ContainsKey(OmpThreadsVar)) env[OmpThreadsVar] = "1";
        env[LauncherPidVar] = Environment.ProcessId.ToString();
        foreach (var (k, v) in _spec.Environment)
        {
            if (v is null) env.Remove(k);
            else env[k] = v;
        }
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start rank {rank}: {_spec.FileName}");
        p.StandardInput.Close();
        var pump = Task.WhenAll(
            Pump(p.StandardOutput, _stdout, rank == 0 ? "" : $"[rank {rank}] "),
            Pump(p.StandardError, _stderr, $"[rank {rank}] "));
        return new Child(rank, p, pump);
    }

    /// <summary>Forwards one of a rank's streams line by line on a thread of its own: a pooled continuation could wait
    /// seconds for a thread in a host whose pool is busy (a test host running other tests), and a rank's lines would then
    /// reach the launcher's output long after they were written.</summary>
    Task Pump(StreamReader from, TextWriter to, string prefix) => Task.Factory.StartNew(() =>
    {
        while (from.ReadLine() is { } line)
            lock (_outputLock)
            {
                to.WriteLine(prefix + line);
                to.Flush();
            }
    }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>Passes a signal on to every rank still running (POSIX; elsewhere both mean kill).</summary>
    public void Forward(ForwardedSignal signal)
    {
        if (signal == ForwardedSignal.Interrupt) _interrupted = true;
        else _terminated = true;
        foreach (var c in _children)
            Kill(c, signal == ForwardedSignal.Interrupt ? PosixProcess.SigInt : PosixProcess.SigTerm);
    }

    /// <summary>Waits for every rank and returns the launcher's exit code: 0 when all exited 0, 130 when interrupted
    /// and all exited 0 or 130, 143 after a forwarded SIGTERM, else the exit code of the first rank that failed.</summary>
    public int Wait()
    {
        if (_children.Count == 0) throw new InvalidOperationException("not started");
        // A list, not a dictionary keyed by task: WaitForExitAsync returns the one cached completed task for every rank
        // that has already exited, so two such ranks would share a key.
        var running = _children.Select(c => (Exit: c.Process.WaitForExitAsync(), Child: c)).ToList();
        (int Rank, int Code)? failure = null;
        Timer? killTimer = null;
        try
        {
            while (running.Count > 0)
            {
                var done = Task.WhenAny(running.Select(r => r.Exit)).GetAwaiter().GetResult();
                int index = running.FindIndex(r => r.Exit == done);
                var child = running[index].Child;
                running.RemoveAt(index);
                child.Pump.Wait(TimeSpan.FromSeconds(5)); // the rest of its output (the pipe closes when it exits)
                int code = child.Process.ExitCode;
                bool ok = code == 0 || (_interrupted && code == ExitInterrupted) || _terminated;
                if (ok || failure != null) continue;
                failure = (child.Rank, code);
                // The order exits are observed in is not the order they happened in: a rank killed by a signal and a
                // rank that then failed on the closed connection (exit 1) can be reaped in either order. A signal is
                // never a reaction to another rank, an error exit can be: among the ranks already gone, the killed one
                // is the cause and is named (its code is the launcher's).
                if (!BySignal(code) && KilledAmong(running, TimeSpan.FromMilliseconds(500)) is { } killed)
                {
                    running.RemoveAll(r => r.Child == killed);
                    killed.Pump.Wait(TimeSpan.FromSeconds(5));
                    Say($"rank {child.Rank} {Describe(code)}, after rank {killed.Rank} exited");
                    failure = (killed.Rank, killed.Process.ExitCode);
                }
                var others = running.Select(r => r.Child).ToList();
                Say($"rank {failure.Value.Rank} {Describe(failure.Value.Code)}"
                    + (others.Count > 0 ? $"; stopping rank{(others.Count > 1 ? "s" : "")} {string.Join(", ", others.Select(o => o.Rank))} "
                        + $"(SIGTERM after {_spec.FailureGrace.TotalSeconds:0.#} s, SIGKILL {_spec.StopTimeout.TotalSeconds:0.#} s later)" : ""));
                int stage = 0;
                killTimer = new Timer(_ =>
                {
                    int signal = Interlocked.Increment(ref stage) == 1 ? PosixProcess.SigTerm : PosixProcess.SigKill;
                    foreach (var o in others) Kill(o, signal);
                }, null, _spec.FailureGrace, _spec.StopTimeout);
            }
        }
        finally
        {
            killTimer?.Dispose();
        }
        if (failure is { } f)
        {
            Say($"rank {f.Rank} failed first; exit code {f.Code}");
            return f.Code is > 0 and < 256 ? f.Code : 1;
        }
        if (_terminated) return ExitTerminated;
        return _interrupted && _children.Any(c => c.Process.ExitCode == ExitInterrupted) ? ExitInterrupted : 0;
    }

    /// <summary>A rank among <paramref name="running"/> that has exited by a signal, waiting up to <paramref name="grace"/>
    /// for one (a signal's exit can be reaped after the exits it caused), or null.</summary>
    static Child? KilledAmong(List<(Task Exit, Child Child)> running, TimeSpan grace)
    {
        var deadline = DateTime.UtcNow + grace;
        while (true)
        {
            foreach (var (_, c) in running)
                if (c.Process.HasExited && BySignal(c.Process.ExitCode)) return c;
            if (DateTime.UtcNow >= deadline) return null;
            Thread.Sleep(20);
        }
    }

    /// <summary>Start, then wait (no signal forwarding).</summary>
    public static int Run(LaunchSpec spec, TextWriter stdout, TextWriter stderr)
    {
        using var launcher = new ProcessLauncher(spec, stdout, stderr);
        launcher.Start();
        return launcher.Wait();
    }

    /// <summary>Whether an exit code is a death by signal: 128 + the signal's number, as a shell reports it.</summary>
    static bool BySignal(int code) => code is > 128 and < 128 + 65;

    static string Describe(int code) => BySignal(code)
        ? $"was killed by {PosixProcess.SignalName(code - 128)} (exit code {code})"
        : $"exited with code {code}";

    void Say(string message)
    {
        lock (_outputLock)
        {
            _stderr.WriteLine($"launcher: {message}");
            _stderr.Flush();
        }
    }

    static void Kill(Child c, int signal)
    {
        try
        {
            if (c.Process.HasExited) return;
            if (PosixProcess.Supported) PosixProcess.Signal(c.Process.Id, signal);
            else c.Process.Kill();
        }
        catch (InvalidOperationException) { } // exited meanwhile
    }

    static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Kills any rank still running (e.g. when the launcher itself is stopped by an exception).</summary>
    public void Dispose()
    {
        foreach (var c in _children)
        {
            Kill(c, PosixProcess.SigKill);
            c.Process.Dispose();
        }
    }
}
