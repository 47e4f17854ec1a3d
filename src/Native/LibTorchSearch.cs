namespace QLoraNet.Native;

/// <summary>
/// The places discovery looks for a libtorch, in order, without running anything (directory listings only):
/// <list type="number">
/// <item>QLORANET_LIBTORCH: a directory holding the libraries, or a libtorch root (its lib/), or a PyTorch package
/// directory's parent (torch/lib);</item>
/// <item>a PyTorch install's torch/lib: $VIRTUAL_ENV, $CONDA_PREFIX, then site-packages and dist-packages under
/// /usr/lib, /usr/local/lib, ~/.local/lib, ~/.pyenv/versions/*/lib, /opt/conda/lib, /opt/*/.venv/lib and
/// /opt/*/venv/lib (python3* directories, newest first);</item>
/// <item>a libtorch download: /usr/local/libtorch/lib, /opt/libtorch/lib;</item>
/// <item>the directories on LD_LIBRARY_PATH.</item>
/// </list>
/// Asking python3 (<see cref="LibTorchEnvironment.AskPython"/>) is left to <see cref="LibTorchDiscovery"/>, which
/// does it only when these places hold no usable CUDA build.
/// </summary>
public static class LibTorchSearch
{
    public const string Variable = "QLORANET_LIBTORCH";

    /// <summary>The value of <see cref="Variable"/> that skips discovery and uses the bundled CPU libtorch.</summary>
    public const string BundledValue = "bundled";

    /// <summary>The file whose presence makes a directory a libtorch library directory.</summary>
    public const string MarkerFile = "libtorch_cpu.so";

    /// <summary>The library directory QLORANET_LIBTORCH designates: the directory itself, its lib/ or its torch/lib; null when none holds libtorch.</summary>
    public static string? FromVariable(string value) =>
        new[] { value, Path.Combine(value, "lib"), Path.Combine(value, "torch", "lib") }.FirstOrDefault(IsLibTorchDir);

    public static bool IsLibTorchDir(string dir) => File.Exists(Path.Combine(dir, MarkerFile));

    /// <summary>The automatic locations (everything but QLORANET_LIBTORCH and python3) that hold libtorch, in order, each once.</summary>
    public static IEnumerable<LibTorchLocation> Locations(LibTorchEnvironment env)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var location in Candidates(env))
        {
            string full;
            try { full = Path.GetFullPath(location.Directory); }
            catch (Exception e) when (e is ArgumentException or PathTooLongException or NotSupportedException) { continue; }
            if (IsLibTorchDir(full) && seen.Add(full)) yield return location with { Directory = full };
        }
    }

    static IEnumerable<LibTorchLocation> Candidates(LibTorchEnvironment env)
    {
        foreach (var variable in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (env.Variable(variable) is { Length: > 0 } prefix)
                foreach (var dir in SitePackages(Path.Combine(prefix, "lib")))
                    yield return new(TorchLib(dir), LibTorchSource.PythonInstall, $"${variable}");

        string R(string path) => Path.Combine(env.Root, path);
        var libDirs = new List<string> { R("usr/lib"), R("usr/local/lib"), Path.Combine(env.Home, ".local", "lib") };
        libDirs.AddRange(Subdirectories(Path.Combine(env.Home, ".pyenv", "versions")).Select(v => Path.Combine(v, "lib")));
        libDirs.Add(R("opt/conda/lib"));
        foreach (var opt in Subdirectories(R("opt")))
        {
            libDirs.Add(Path.Combine(opt, ".venv", "lib"));
            libDirs.Add(Path.Combine(opt, "venv", "lib"));
        }
        foreach (var lib in libDirs)
            foreach (var dir in SitePackages(lib))
                yield return new(TorchLib(dir), LibTorchSource.PythonInstall, dir);

        foreach (var download in new[] { R("usr/local/libtorch/lib"), R("opt/libtorch/lib") })
            yield return new(download, LibTorchSource.Download, Path.GetDirectoryName(download)!);

        foreach (var dir in (env.Variable("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            yield return new(dir, LibTorchSource.LibraryPath, "LD_LIBRARY_PATH");
    }

    static string TorchLib(string sitePackages) => Path.Combine(sitePackages, "torch", "lib");

    /// <summary>lib/python3*/{site,dist}-packages under <paramref name="lib"/>, newest Python first; Debian's lib/python3/dist-packages last.</summary>
    static IEnumerable<string> SitePackages(string lib)
    {
        var pythons = Subdirectories(lib).Where(d => Path.GetFileName(d).StartsWith("python3", StringComparison.Ordinal))
            .OrderByDescending(d => MinorVersion(Path.GetFileName(d)));
        foreach (var python in pythons)
        {
            yield return Path.Combine(python, "site-packages");
            yield return Path.Combine(python, "dist-packages");
        }
    }

    static int MinorVersion(string name) => int.TryParse(name.AsSpan("python3".Length).TrimStart('.'), out int minor) ? minor : -1;

    static IEnumerable<string> Subdirectories(string dir)
    {
        try { return Directory.Exists(dir) ? Directory.GetDirectories(dir).Order(StringComparer.Ordinal).ToArray() : []; }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException) { return []; }
    }
}
