using System.Runtime.InteropServices;

namespace QLoraNet.Cli;

/// <summary>
/// Loads the native TorchSharp bridge ourselves before TorchSharp does, so a failure is reported with the real
/// loader error. TorchSharp's own message in that case wrongly blames a missing libtorch package reference (and it
/// then copies hundreds of MB of native files around before failing again).
/// </summary>
public static class LibTorchProbe
{
    static bool _done;

    public static void EnsureLoaded()
    {
        if (_done) return;
        string lib = OperatingSystem.IsWindows() ? "LibTorchSharp.dll"
                   : OperatingSystem.IsMacOS() ? "libLibTorchSharp.dylib" : "libLibTorchSharp.so";
        var tried = new List<string>();
        foreach (var dir in CandidateDirs())
        {
            string path = Path.Combine(dir, lib);
            if (!File.Exists(path)) continue;
            try
            {
                NativeLibrary.Load(path);
                _done = true;
                return;
            }
            catch (Exception e)
            {
                tried.Add($"{path}: {FirstLine(e.Message)}");
            }
        }
        if (tried.Count == 0)
        {
            // Not next to the app: let TorchSharp search its usual way, but still catch its failure below.
            try { TorchSharp.torch.InitializeDeviceType(TorchSharp.DeviceType.CPU); _done = true; return; }
            catch (Exception e) { tried.Add($"{lib} (TorchSharp's search): {FirstLine((e.InnerException ?? e).Message)}"); }
        }
        string ld = Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "(unset)";
        throw new InvalidOperationException(
            "libtorch failed to load. Tried: " + string.Join("; ", tried) + $". LD_LIBRARY_PATH={ld}. " +
            "With the default 'cpu' backend, rebuild (dotnet build) so the output folder gets the patched library; " +
            "with -p:TorchBackend=system, put a libtorch 2.10 folder (e.g. PyTorch's torch/lib) on LD_LIBRARY_PATH.");
    }

    static IEnumerable<string> CandidateDirs()
    {
        yield return AppContext.BaseDirectory;
        string rid = OperatingSystem.IsWindows() ? "win-x64" : OperatingSystem.IsMacOS() ? "osx-arm64" : "linux-x64";
        yield return Path.Combine(AppContext.BaseDirectory, "runtimes", rid, "native");
    }

    static string FirstLine(string s) => string.Join(" ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
}
