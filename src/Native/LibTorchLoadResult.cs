namespace QLoraNet.Native;

/// <summary>
/// Which libtorch the process runs on, and why: a machine's build (CUDA, or CPU when QLORANET_LIBTORCH names one), or
/// the bundled CPU build with the reason none was taken. <see cref="Summary"/> is the one line the CLI prints at start.
/// </summary>
/// <param name="Source">where it came from.</param>
/// <param name="Directory">the directory its libraries were loaded from (null: TorchSharp's own search found them).</param>
/// <param name="Version">its version ("2.11.0+cu130"), null when unknown.</param>
/// <param name="IsCuda">a CUDA build (libtorch_cuda.so loaded).</param>
/// <param name="FallbackReason">for the bundled build: why no machine build is used; null otherwise.</param>
/// <param name="Skipped">machine builds found but not used, each with the reason (for the error when CUDA is asked).</param>
public sealed record LibTorchLoadResult(
    LibTorchSource Source,
    string? Directory,
    string? Version,
    bool IsCuda,
    string? FallbackReason,
    IReadOnlyList<string> Skipped,
    string Origin = "")
{
    /// <summary>Why TorchSharp's frees are not guarded against the finalizer (<see cref="FinalizerGuard"/>); null when they are.</summary>
    public string? FinalizerGuardProblem { get; init; }

    /// <summary>One line: which libtorch, from where, for the bundled one why, and a finalizer guard that is off.</summary>
    public string Summary => Source switch
    {
        LibTorchSource.Bundled => $"libtorch {Version ?? "2.10.0"} (CPU, bundled) from {Directory ?? "the system library path (TorchSharp's search)"}"
            + (FallbackReason is null ? "" : $": {FallbackReason}"),
        _ => $"libtorch {Version ?? "(version unknown)"} ({(IsCuda ? "CUDA" : "CPU")}) from {Directory} ({OriginText})",
    } + (FinalizerGuardProblem is null ? "" : $"; finalizer guard: {FinalizerGuardProblem}");

    string OriginText => Source switch
    {
        LibTorchSource.Variable => LibTorchSearch.Variable,
        LibTorchSource.PythonInstall => $"PyTorch install, {Origin}",
        LibTorchSource.Python => "PyTorch install reported by python3",
        LibTorchSource.Download => $"libtorch download, {Origin}",
        LibTorchSource.LibraryPath => "LD_LIBRARY_PATH",
        _ => Origin,
    };

    /// <summary>
    /// What to say when CUDA is asked for (device: cuda) and libtorch sees no GPU: what was found and what to install.
    /// </summary>
    public string CudaUnavailableHint()
    {
        if (Source != LibTorchSource.Bundled && IsCuda)
            return $"the CUDA libtorch {Version} from {Directory} sees no GPU (check nvidia-smi and the driver's CUDA version)";
        string found = Source != LibTorchSource.Bundled ? $"the libtorch loaded is a CPU-only build ({Summary})"
            : Skipped.Count > 0 ? $"found only: {string.Join("; ", Skipped)}"
            : $"running on the bundled CPU libtorch ({FallbackReason ?? "no CUDA libtorch found"})";
        return $"{found}; {LibTorchCompatibility.InstallHint} (README, Backends)";
    }
}

/// <summary>libtorch could not be loaded at all, or a failed load left the process unable to fall back. One line.</summary>
public sealed class LibTorchLoadException(string message) : Exception(message);
