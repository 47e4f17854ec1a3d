using QLoraNet.Native;

namespace QLoraNet;

/// <summary>
/// The libtorch this process runs on. Every QLoraNet entry point loads it on first use; call <see cref="Load"/> first
/// to choose the moment or to read which one was taken. On Linux a CUDA libtorch 2.10-compatible build of the machine is
/// preferred (QLORANET_LIBTORCH, a PyTorch install's torch/lib, a libtorch download, LD_LIBRARY_PATH) when the app keeps
/// its bundled CPU libtorch out of its native search directories (README: install as a package); otherwise the bundled
/// one is used and <see cref="LibTorchInfo.FallbackReason"/> says why.
/// </summary>
public static class LibTorch
{
    /// <summary>Loads libtorch once per process and tells which one runs.</summary>
    /// <exception cref="QLoraNetBackendException">no libtorch could be loaded (the loader's error).</exception>
    public static LibTorchInfo Load() => Errors.Guard(() =>
    {
        var r = LibTorchDiscovery.EnsureLoaded();
        return new LibTorchInfo(r.Summary, r.Directory, r.Version, r.IsCuda, r.FallbackReason);
    });

    /// <summary>Throws when <paramref name="device"/> is "cuda" and libtorch sees no GPU, saying what was found and what to install.</summary>
    internal static void RequireCudaIfAsked(string device, string source)
    {
        var r = LibTorchDiscovery.EnsureLoaded();
        if (device == "cuda" && !TorchSharp.torch.cuda.is_available())
            throw new QLoraNetBackendException($"{source} is cuda but libtorch sees no CUDA device: {r.CudaUnavailableHint()}");
    }
}

/// <summary>Which libtorch was loaded.</summary>
/// <param name="Summary">one line: version, CPU or CUDA, directory, how it was found (or why the bundled one).</param>
/// <param name="Directory">where its libraries were loaded from; null when TorchSharp's own search found them.</param>
/// <param name="Version">its version, e.g. "2.11.0+cu130"; null when unknown.</param>
/// <param name="IsCuda">a CUDA build.</param>
/// <param name="FallbackReason">when the bundled CPU libtorch runs: why no machine build was used; else null.</param>
public sealed record LibTorchInfo(string Summary, string? Directory, string? Version, bool IsCuda, string? FallbackReason);
