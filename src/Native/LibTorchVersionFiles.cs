using System.Text.RegularExpressions;

namespace QLoraNet.Native;

/// <summary>
/// The version a libtorch build says it is, from the files beside its libraries: torch/version.py (a PyTorch
/// install), build-version (a libtorch download), include/torch/version.h (both); null when none is there. Each file
/// is read only when it is at most 1 MiB. One source, compiled into QLoraNet.Native (the loader) and linked into
/// QLoraNet.Quant (the CUDA allocator counters, which check the loaded version and must not depend on the loader).
/// </summary>
internal static class LibTorchVersionFiles
{
    static readonly Regex PythonVersion = new(@"^__version__\s*=\s*['""]([^'""]+)['""]", RegexOptions.Multiline | RegexOptions.CultureInvariant);
    static readonly Regex HeaderVersion = new(@"#define\s+TORCH_VERSION\s+""([^""]+)""", RegexOptions.CultureInvariant);

    /// <param name="libDir">the directory holding libtorch's shared libraries (torch/lib or libtorch/lib).</param>
    public static string? Read(string libDir)
    {
        string parent = Path.GetDirectoryName(Path.GetFullPath(libDir).TrimEnd('/')) ?? libDir;
        string? Read(string file, Regex? pattern)
        {
            string path = Path.Combine(parent, file);
            if (!File.Exists(path) || new FileInfo(path).Length > 1 << 20) return null;
            string text = File.ReadAllText(path);
            if (pattern is null) return text.Trim().Split('\n')[0].Trim() is { Length: > 0 } line ? line : null;
            return pattern.Match(text) is { Success: true } m ? m.Groups[1].Value : null;
        }
        return Read("version.py", PythonVersion) ?? Read("build-version", null) ?? Read(Path.Combine("include", "torch", "version.h"), HeaderVersion);
    }
}
