namespace QLoraNet.Native;

/// <summary>
/// What discovery reads from the machine, as a value so tests can point it at a fake directory tree: environment
/// variables, the home directory, a root under which the absolute locations (/usr/lib/python3*/dist-packages, ...) are
/// looked up, and how to ask Python where torch is.
/// </summary>
/// <param name="Variable">an environment variable, or null when unset.</param>
/// <param name="Home">the user's home directory (for ~/.local and ~/.pyenv).</param>
/// <param name="Root">prefix of every absolute location searched ("/" on a real machine).</param>
/// <param name="AskPython">the last resort: torch/lib of the python3 on PATH, or null (no python3, no torch, timeout).</param>
public sealed record LibTorchEnvironment(Func<string, string?> Variable, string Home, string Root, Func<string?> AskPython)
{
    /// <summary>The process's own environment; Python is asked with <see cref="PythonProbe.TorchLib"/>.</summary>
    public static LibTorchEnvironment Current { get; } = new(
        Environment.GetEnvironmentVariable,
        Environment.GetFolderPath(Environment.SpecialFolder.UserProfile),
        "/",
        () => PythonProbe.TorchLib(TimeSpan.FromSeconds(5)));
}
