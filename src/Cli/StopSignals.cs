using System.Runtime.InteropServices;

namespace QLoraNet.Cli;

/// <summary>
/// Turns the signals that ask a process to stop into one <see cref="CancellationToken"/> for a long job: Ctrl-C
/// (SIGINT) and SIGTERM, which batch schedulers, container runtimes and cloud preemption send before they kill. The
/// first one cancels the token (the job finishes or abandons its step, saves, and returns) and records the exit code
/// the shell convention gives it, 128 + the signal number (130, 143); a second one is left to its default action,
/// which ends the process at once. Only the CLI handles signals; the libraries take the token.
/// </summary>
sealed class StopSignals : IDisposable
{
    readonly CancellationTokenSource _cts = new();
    readonly List<PosixSignalRegistration> _registrations = [];
    readonly TextWriter _stdout;
    int _exitCode;

    public StopSignals(TextWriter stdout)
    {
        _stdout = stdout;
        Register(PosixSignal.SIGINT, "Ctrl-C", CliApp.ExitInterrupted);
        Register(PosixSignal.SIGTERM, "SIGTERM", CliApp.ExitTerminated);
    }

    public CancellationToken Token => _cts.Token;

    /// <summary>The exit code of the signal that stopped the job (130 or 143); 130 when it was cancelled otherwise.</summary>
    public int ExitCode => _exitCode == 0 ? CliApp.ExitInterrupted : _exitCode;

    void Register(PosixSignal signal, string name, int exitCode)
    {
        try
        {
            _registrations.Add(PosixSignalRegistration.Create(signal, context =>
            {
                if (Interlocked.CompareExchange(ref _exitCode, exitCode, 0) != 0) return;  // second signal: default action
                context.Cancel = true;
                _cts.Cancel();
                _stdout.WriteLine($"{name}: finishing this step, then saving a checkpoint (a second signal aborts at once)");
            }));
        }
        catch (PlatformNotSupportedException)
        {
            // SIGTERM has no Windows counterpart; Ctrl-C still works there.
        }
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _cts.Dispose();
    }
}
