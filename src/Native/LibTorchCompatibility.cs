namespace QLoraNet.Native;

/// <summary>
/// Whether a libtorch can stand in for the 2.10 TorchSharp 0.107 was built against. Two tests, both needed:
/// <list type="number">
/// <item>the version is 2.x with x &gt;= 10: older builds lack operators and behave differently; newer 2.x builds keep the
/// C++ API TorchSharp calls (PyTorch 2.11 with CUDA 13 runs TorchSharp 0.107 unchanged: verified on an H100 and an H200);</item>
/// <item>every symbol libLibTorchSharp.so imports from libtorch (its undefined, unversioned, non-weak dynamic symbols:
/// glibc and libstdc++ version theirs) is exported by libc10/libtorch_cpu/libtorch. This is the loader's own criterion,
/// checked before loading because functions bind lazily: a missing one would only fail, fatally, at its first call.</item>
/// </list>
/// A build whose version cannot be read passes on the symbol test alone (the result says "version unknown").
/// </summary>
public static class LibTorchCompatibility
{
    public const int RequiredMajor = 2, MinimumMinor = 10;

    /// <summary>What to install, for messages.</summary>
    public const string InstallHint = "install PyTorch 2.10 or newer 2.x with CUDA (pip install torch) or unpack a libtorch 2.10 CUDA download, or point QLORANET_LIBTORCH at one";

    /// <summary>null when <paramref name="build"/> can run TorchSharp's bridge <paramref name="libTorchSharp"/>; else one line saying why not and what to install.</summary>
    public static string? Problem(LibTorchBuild build, ElfLibrary? libTorchSharp)
    {
        string at = build.Location.Directory;
        if (build.Version is { } version)
        {
            var mm = LibTorchBuild.MajorMinor(version);
            if (mm is not { } v || v.Major != RequiredMajor || v.Minor < MinimumMinor)
                return $"libtorch {version} at {at} is not 2.10-compatible (TorchSharp 0.107 needs libtorch {RequiredMajor}.{MinimumMinor} or a newer {RequiredMajor}.x)";
        }
        if (libTorchSharp is null) return null;
        var needed = libTorchSharp.UnversionedImports();
        var exported = new HashSet<ulong>();
        foreach (var lib in build.Libraries.Where(l => LibTorchBuild.CpuLibraries.Contains(Path.GetFileName(l.Path))))
            exported.UnionWith(lib.ExportHashes());
        var missing = needed.Where(n => !exported.Contains(ElfLibrary.Fnv(System.Text.Encoding.UTF8.GetBytes(n)))).ToList();
        if (missing.Count == 0) return null;
        return $"libtorch {build.Version ?? "(version unknown)"} at {at} lacks {missing.Count} of the {needed.Count} functions TorchSharp 0.107 calls (e.g. {missing[0]})";
    }
}
