using System.Runtime.InteropServices;

namespace QLoraNet.Native;

/// <summary>
/// Picks and loads the libtorch this process runs on, before the first torch call. On Linux it looks for a CUDA
/// libtorch 2.10-compatible build on the machine (<see cref="LibTorchSearch"/>: QLORANET_LIBTORCH, PyTorch installs,
/// python3, libtorch downloads, LD_LIBRARY_PATH), checks it (<see cref="LibTorchCompatibility"/>) and, when a GPU driver
/// is present (libcuda.so.1 loads), loads it (<see cref="LibTorchLoader"/>); otherwise, or when that fails, it loads the
/// bundled CPU libtorch and says why. QLORANET_LIBTORCH=bundled skips the search. On Windows and macOS it loads the
/// bundled libtorch as TorchSharp would.
/// <para>
/// The app's own layout decides whether a machine build can be used at all: TorchSharp later loads "torch_cpu" by
/// name, and .NET resolves that name in the app's native search directories first. QLoraNet's hosts therefore keep the
/// bundled CPU libtorch in <c>libtorch/</c> beside the app (build/TorchBackend.targets), outside those directories; an
/// app that bundles libtorch the standard way (runtimes/RID/native) gets that one, and the result says so.
/// </para>
/// Native libraries load once per process, so the outcome is kept for the process (<see cref="EnsureLoaded"/>).
/// </summary>
public static class LibTorchDiscovery
{
    /// <summary>The folder beside the app that holds the bundled CPU libtorch (QLoraNet's hosts).</summary>
    public const string BundledFolder = "libtorch";

    static readonly Lazy<LibTorchLoadResult> ForProcess = new(() =>
    {
        CudaAllocatorDefaults.Apply();   // before libtorch can start CUDA's allocator
        return Load(LibTorchEnvironment.Current, AppLayout.Current()) with { FinalizerGuardProblem = FinalizerGuard.Problem };
    });

    /// <summary>Loads libtorch on the first call (later calls return the same outcome, or rethrow the same failure).</summary>
    /// <exception cref="LibTorchLoadException">no libtorch could be loaded.</exception>
    public static LibTorchLoadResult EnsureLoaded() => ForProcess.Value;

    /// <summary>Whether <see cref="EnsureLoaded"/> has run (successfully) in this process.</summary>
    public static bool IsLoaded => ForProcess.IsValueCreated;

    /// <summary>The machine build to use (null: none), why none, and the builds found but not used.</summary>
    public sealed record Choice(LibTorchBuild? Build, string? Reason, IReadOnlyList<string> Skipped);

    /// <summary>
    /// The search and the checks, without loading anything: QLORANET_LIBTORCH decides alone when set (any build it names
    /// is used, CPU-only too); otherwise the first CUDA build that passes the checks, asking python3 only when the
    /// cheap places hold none.
    /// </summary>
    /// <param name="libTorchSharp">TorchSharp's bridge, whose imports a build must export; null skips that check.</param>
    public static Choice Find(LibTorchEnvironment env, ElfLibrary? libTorchSharp)
    {
        string? variable = env.Variable(LibTorchSearch.Variable);
        if (variable == LibTorchSearch.BundledValue) return new(null, $"{LibTorchSearch.Variable}={variable}", []);
        if (!string.IsNullOrEmpty(variable))
        {
            string? dir = LibTorchSearch.FromVariable(variable);
            if (dir is null)
                return new(null, $"{LibTorchSearch.Variable}={variable} holds no libtorch (no {LibTorchSearch.MarkerFile} in it, its lib/ or its torch/lib/)", []);
            var (build, problem) = Check(new LibTorchLocation(Path.GetFullPath(dir), LibTorchSource.Variable, LibTorchSearch.Variable), libTorchSharp);
            return build is null ? new(null, $"{LibTorchSearch.Variable}={variable}: {problem}; {LibTorchCompatibility.InstallHint}", []) : new(build, null, []);
        }

        var skipped = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var location in LibTorchSearch.Locations(env))
        {
            seen.Add(location.Directory);
            if (Usable(location, libTorchSharp, skipped) is { } build) return new(build, null, skipped);
        }
        if (env.AskPython() is { } pythonDir && LibTorchSearch.IsLibTorchDir(pythonDir) && !seen.Contains(Path.GetFullPath(pythonDir)))
        {
            if (Usable(new LibTorchLocation(Path.GetFullPath(pythonDir), LibTorchSource.Python, "python3"), libTorchSharp, skipped) is { } build)
                return new(build, null, skipped);
        }
        string reason = skipped.Count == 0
            ? "no CUDA libtorch found (looked at QLORANET_LIBTORCH, PyTorch installs, python3, /usr/local/libtorch, /opt/libtorch, LD_LIBRARY_PATH)"
            : $"no usable CUDA libtorch ({string.Join("; ", skipped)})";
        return new(null, reason, skipped);
    }

    static LibTorchBuild? Usable(LibTorchLocation location, ElfLibrary? libTorchSharp, List<string> skipped)
    {
        var (build, problem) = Check(location, libTorchSharp);
        if (build is null) { skipped.Add(problem!); return null; }
        if (!build.IsCuda) { skipped.Add($"CPU-only libtorch {build.Version ?? "(version unknown)"} at {location.Directory}"); return null; }
        return build;
    }

    static (LibTorchBuild? Build, string? Problem) Check(LibTorchLocation location, ElfLibrary? libTorchSharp)
    {
        try
        {
            var build = LibTorchBuild.Inspect(location);
            return LibTorchCompatibility.Problem(build, libTorchSharp) is { } problem ? (null, problem) : (build, null);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            return (null, e.Message);
        }
    }

    /// <summary>Where this app keeps TorchSharp's bridge and the bundled CPU libtorch.</summary>
    /// <param name="LibTorchSharp">libLibTorchSharp.so, or null when the app has none beside it.</param>
    /// <param name="BundledDir">the bundled CPU libtorch in <see cref="BundledFolder"/>, or null.</param>
    /// <param name="StandardBundleDir">a native search directory holding libtorch (the standard NuGet layout), or null.</param>
    public sealed record AppLayout(string? LibTorchSharp, string? BundledDir, string? StandardBundleDir)
    {
        public static AppLayout Current()
        {
            string app = AppContext.BaseDirectory;
            string rid = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
            string lts = "libLibTorchSharp.so";
            string? bridge = new[] { Path.Combine(app, lts), Path.Combine(app, "runtimes", rid, "native", lts) }.FirstOrDefault(File.Exists);
            string bundled = Path.Combine(app, BundledFolder);
            var searchDirs = (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string ?? app)
                .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);
            return new(bridge, LibTorchSearch.IsLibTorchDir(bundled) ? bundled : null, searchDirs.FirstOrDefault(LibTorchSearch.IsLibTorchDir));
        }
    }

    /// <summary>The whole decision and the load, for <paramref name="env"/> and <paramref name="layout"/>.</summary>
    public static LibTorchLoadResult Load(LibTorchEnvironment env, AppLayout layout)
    {
        if (!OperatingSystem.IsLinux()) return LoadStandard(layout, null, []);
        if (layout.StandardBundleDir is { } standard)
            return LoadStandard(layout, $"the app bundles libtorch in its native directory {standard}, where TorchSharp loads it by name", []);

        ElfLibrary? bridge = null;
        try { bridge = layout.LibTorchSharp is { } p ? ElfLibrary.Read(p) : null; }
        catch (InvalidDataException) { }

        var choice = Find(env, bridge);
        string? reason = choice.Reason;
        if (choice.Build is { } build && layout.LibTorchSharp is { } lts)
        {
            if (build.IsCuda && build.Location.Source != LibTorchSource.Variable && DriverProblem() is { } noDriver)
                reason = $"found CUDA libtorch {build.Describe()} at {build.Location.Directory}, but no NVIDIA driver ({noDriver})";
            else
            {
                try
                {
                    LibTorchLoader.Load(build, lts);
                    return new LibTorchLoadResult(build.Location.Source, build.Location.Directory, build.Version, build.IsCuda, null, choice.Skipped, build.Location.Origin);
                }
                catch (LibTorchLoader.Failure f) when (f.CanFallBack)
                {
                    reason = f.Message;
                }
                catch (LibTorchLoader.Failure f)
                {
                    throw new LibTorchLoadException($"{f.Message}; this process cannot fall back to the bundled CPU libtorch: fix that build, or set {LibTorchSearch.Variable}={LibTorchSearch.BundledValue}");
                }
            }
        }
        else if (choice.Build is { } found)
            reason = $"found libtorch {found.Describe()} at {found.Location.Directory}, but the app has no libLibTorchSharp.so beside it";

        if (layout.BundledDir is not { } bundledDir || layout.LibTorchSharp is not { } bridgePath)
            return LoadStandard(layout, reason, choice.Skipped);
        try
        {
            var bundled = LibTorchBuild.Inspect(new LibTorchLocation(bundledDir, LibTorchSource.Bundled, "bundled"));
            LibTorchLoader.Load(bundled, bridgePath);
            return new LibTorchLoadResult(LibTorchSource.Bundled, bundledDir, BundledVersion(), false, reason, choice.Skipped);
        }
        catch (Exception e) when (e is LibTorchLoader.Failure or InvalidDataException or IOException)
        {
            throw new LibTorchLoadException($"the bundled CPU libtorch in {bundledDir} failed to load: {e.Message}" + (reason is null ? "" : $" (after: {reason})")
                + ". Rebuild (dotnet build) so the output folder gets the patched libLibTorchSharp.so");
        }
    }

    /// <summary>null when libcuda.so.1 (the NVIDIA driver's library) loads; else the loader's error.</summary>
    static string? DriverProblem()
    {
        try { NativeLibrary.Load("libcuda.so.1"); return null; }
        catch (DllNotFoundException e) { return "libcuda.so.1 does not load: " + LibTorchLoader.OneLine(e.Message); }
    }

    /// <summary>
    /// TorchSharp's own way, with the real loader error when it fails: the bridge beside the app (which finds a
    /// libtorch through its runpath or LD_LIBRARY_PATH), else TorchSharp's search.
    /// </summary>
    static LibTorchLoadResult LoadStandard(AppLayout layout, string? reason, IReadOnlyList<string> skipped)
    {
        string? dir = layout.StandardBundleDir;
        if (layout.LibTorchSharp is { } lts)
        {
            try
            {
                FinalizerGuard.Install(NativeLibrary.Load(lts));
                return new LibTorchLoadResult(LibTorchSource.Bundled, dir, BundledVersion(), false, reason, skipped);
            }
            catch (DllNotFoundException e)
            {
                throw new LibTorchLoadException($"libtorch failed to load: {lts}: {LibTorchLoader.OneLine(e.Message)}"
                    + (reason is null ? "" : $" (after: {reason})") + $". LD_LIBRARY_PATH={Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "(unset)"}. "
                    + $"With the default 'cpu' backend, rebuild (dotnet build) so the output folder gets the patched library; without a bundled libtorch, install a CUDA or CPU libtorch 2.10 (pip install torch) or set {LibTorchSearch.Variable}");
            }
        }
        try { TorchSharp.torch.InitializeDeviceType(TorchSharp.DeviceType.CPU); }
        catch (Exception e)
        {
            throw new LibTorchLoadException($"libtorch failed to load (TorchSharp's search): {LibTorchLoader.OneLine((e.InnerException ?? e).Message)}");
        }
        return new LibTorchLoadResult(LibTorchSource.Bundled, dir, BundledVersion(), false, reason, skipped);
    }

    /// <summary>The libtorch version TorchSharp was built for ("2.10.0"), read only once libtorch is loaded: touching
    /// <c>torch</c> runs its static constructor, which loads libtorch by name.</summary>
    static string BundledVersion()
    {
        string v = TorchSharp.torch.__version__;
        return v.EndsWith(".0.0", StringComparison.Ordinal) && v.Count(c => c == '.') == 3 ? v[..^2] : v;
    }
}
