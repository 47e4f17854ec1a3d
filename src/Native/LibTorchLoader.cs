using System.Runtime.InteropServices;

namespace QLoraNet.Native;

/// <summary>
/// Loads a libtorch build into the process before TorchSharp runs: first the libraries it needs from elsewhere (the
/// CUDA runtime from its DT_RUNPATH, libgomp), then its own libraries by absolute path in dependency order (libc10,
/// libc10_cuda, libtorch_cpu, libtorch_cuda, libtorch), then TorchSharp's bridge libLibTorchSharp.so. The dynamic loader
/// matches a DT_NEEDED name against the SONAMEs already loaded, so the bridge binds to these libraries and not to
/// any other copy; TorchSharp's own later loads by name ("torch_cpu", "LibTorchSharp") find the same ones, as long as
/// no other libtorch_cpu.so lies in the app's native search directories (see <see cref="LibTorchDiscovery"/>).
/// Last, TorchSharp's imports are routed through the <see cref="FinalizerGuard"/>, before its first native call.
/// </summary>
static class LibTorchLoader
{
    /// <summary>Thrown when loading failed; <see cref="CanFallBack"/> is false when libraries of the build stay loaded.</summary>
    public sealed class Failure(string message, bool canFallBack) : Exception(message)
    {
        public bool CanFallBack { get; } = canFallBack;
    }

    public static void Load(LibTorchBuild build, string libTorchSharp)
    {
        var sonames = build.Libraries.Select(l => l.SoName ?? Path.GetFileName(l.Path)).ToHashSet();
        foreach (var lib in build.Libraries)
            foreach (var need in lib.Needed.Where(n => !sonames.Contains(n) && !n.StartsWith("ld-linux", StringComparison.Ordinal)))
                LoadDependency(lib, need);

        var loaded = new List<IntPtr>();
        foreach (var lib in build.Libraries)
        {
            try { loaded.Add(NativeLibrary.Load(lib.Path)); }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
            {
                foreach (var handle in Enumerable.Reverse(loaded)) NativeLibrary.Free(handle);
                bool clean = !ProcessMaps.Libraries().Any(p => p.StartsWith(RealPath(build.Location.Directory) + "/", StringComparison.Ordinal));
                throw new Failure($"loading {lib.Path} failed: {OneLine(e.Message)}", clean);
            }
        }
        IntPtr bridge;
        try { bridge = NativeLibrary.Load(libTorchSharp); }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            throw new Failure($"loading TorchSharp's {libTorchSharp} over {build.Location.Directory} failed: {OneLine(e.Message)}", false);
        }
        Verify(build);
        FinalizerGuard.Install(bridge);
    }

    /// <summary>
    /// Best effort: a library the build needs from outside its set, from the needing library's DT_RUNPATH, else by
    /// name (LD_LIBRARY_PATH, ld.so.cache). A failure here is not an error: some of these only resolve inside their
    /// needing library's own load (PyTorch 2.11's libtorch_nvshmem.so needs symbols of libc10_cuda.so, which a lone
    /// dlopen does not see), so the set's load below is what decides, and its loader error is what is reported.
    /// </summary>
    static void LoadDependency(ElfLibrary lib, string need)
    {
        foreach (var dir in lib.SearchPaths)
        {
            string path = Path.Combine(dir, need);
            if (File.Exists(path) && NativeLibrary.TryLoad(path, out _)) return;
        }
        NativeLibrary.TryLoad(need, out _);
    }

    /// <summary>Every library of the build is mapped from its directory (not another copy with the same SONAME).</summary>
    static void Verify(LibTorchBuild build)
    {
        var mapped = ProcessMaps.Libraries();
        foreach (var lib in build.Libraries)
        {
            string real = RealPath(lib.Path);
            if (!mapped.Contains(real))
            {
                string name = Path.GetFileName(lib.Path);
                string other = mapped.FirstOrDefault(p => Path.GetFileName(p) == name) ?? "nowhere";
                throw new Failure($"{name} of {build.Location.Directory} was loaded, yet the process maps {name} from {other}", false);
            }
        }
    }

    public static string RealPath(string path)
    {
        IntPtr resolved = realpath(path, IntPtr.Zero);
        if (resolved == IntPtr.Zero) return Path.GetFullPath(path);
        try { return Marshal.PtrToStringUTF8(resolved) ?? path; }
        finally { free(resolved); }
    }

    public static string OneLine(string s) => string.Join(" ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));

    [DllImport("libc", SetLastError = true)] static extern IntPtr realpath([MarshalAs(UnmanagedType.LPUTF8Str)] string path, IntPtr resolved);
    [DllImport("libc")] static extern void free(IntPtr p);
}

/// <summary>The shared libraries this process has mapped, as /proc/self/maps lists them (canonical paths).</summary>
public static class ProcessMaps
{
    public static HashSet<string> Libraries()
    {
        var result = new HashSet<string>(StringComparer.Ordinal);
        if (!File.Exists("/proc/self/maps")) return result;
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            string path = line[slash..];
            if (path.EndsWith(" (deleted)", StringComparison.Ordinal)) path = path[..^" (deleted)".Length];
            if (path.Contains(".so", StringComparison.Ordinal)) result.Add(path);
        }
        return result;
    }
}
