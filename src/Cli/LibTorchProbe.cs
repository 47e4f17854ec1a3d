using QLoraNet.Native;

namespace QLoraNet.Cli;

/// <summary>
/// The CLI's side of <see cref="LibTorchDiscovery"/>: every verb that needs torch calls <see cref="EnsureLoaded"/>
/// first. The process entry (Program) sets <see cref="AnnounceTo"/> so that the one line saying which libtorch was
/// loaded from where (or why the bundled CPU one) goes to stderr once; in-process callers (tests) leave it unset.
/// A failure is reported with the loader's real error (TorchSharp's own message wrongly blames a missing package).
/// </summary>
public static class LibTorchProbe
{
    /// <summary>Where the start line goes; null: nowhere. Set once by Program.</summary>
    public static TextWriter? AnnounceTo { get; set; }

    public static LibTorchLoadResult EnsureLoaded()
    {
        bool first = !LibTorchDiscovery.IsLoaded;
        var result = LibTorchDiscovery.EnsureLoaded();
        if (first) AnnounceTo?.WriteLine(result.Summary);
        return result;
    }

    /// <summary>
    /// When <paramref name="device"/> is cuda and libtorch sees no GPU: one line saying what was found and what to
    /// install (from discovery's outcome), instead of failing later on the first CUDA tensor.
    /// </summary>
    public static void RequireCudaIfAsked(string device, string source)
    {
        var result = EnsureLoaded();
        if (device == "cuda" && !TorchSharp.torch.cuda.is_available())
            throw new InvalidOperationException($"{source} is cuda but libtorch sees no CUDA device: {result.CudaUnavailableHint()}");
    }
}
