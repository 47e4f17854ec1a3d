using System.Text.RegularExpressions;

namespace QLoraNet.Native;

/// <summary>
/// A libtorch found in a directory, inspected without loading it: its version (from the files PyTorch and libtorch
/// downloads ship beside the libraries), whether it is a CUDA build, and the libraries TorchSharp needs from it, in
/// dependency order (each after every library of the set it lists in DT_NEEDED).
/// </summary>
public sealed record LibTorchBuild(LibTorchLocation Location, string? Version, bool IsCuda, IReadOnlyList<ElfLibrary> Libraries)
{
    /// <summary>The libraries of a CPU build, and the two a CUDA build adds (SONAMEs = file names in every build).</summary>
    public static readonly string[] CpuLibraries = ["libc10.so", "libtorch_cpu.so", "libtorch.so"];
    public static readonly string[] CudaLibraries = ["libc10_cuda.so", "libtorch_cuda.so"];


    /// <summary>"2.11.0+cu130 (CUDA)" or "2.10.0 (CPU)"; "version unknown" when no version file was found.</summary>
    public string Describe() => $"{Version ?? "version unknown"} ({(IsCuda ? "CUDA" : "CPU")})";

    /// <summary>Reads the directory; a one-line <see cref="InvalidDataException"/> when a library is missing or not a shared library.</summary>
    public static LibTorchBuild Inspect(LibTorchLocation location)
    {
        string dir = location.Directory;
        bool cuda = CudaLibraries.All(f => File.Exists(Path.Combine(dir, f)));
        var names = cuda ? CpuLibraries.Concat(CudaLibraries) : CpuLibraries;
        var libraries = new List<ElfLibrary>();
        foreach (var name in names)
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) throw new InvalidDataException($"{dir} has {LibTorchSearch.MarkerFile} but no {name}: not a complete libtorch");
            var elf = ElfLibrary.Read(path);
            if (elf.Machine != ExpectedMachine)
                throw new InvalidDataException($"{path} is built for another processor (ELF machine {elf.Machine})");
            libraries.Add(elf);
        }
        return new LibTorchBuild(location, ReadVersion(dir), cuda, DependencyOrder(libraries));
    }

    static ushort ExpectedMachine => System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture
        == System.Runtime.InteropServices.Architecture.Arm64 ? ElfLibrary.Aarch64 : ElfLibrary.X8664;

    /// <summary>The version the build says it is (<see cref="LibTorchVersionFiles"/>); null when no file says.</summary>
    public static string? ReadVersion(string libDir) => LibTorchVersionFiles.Read(libDir);

    /// <summary>(major, minor) of a version such as "2.11.0+cu130"; null when it does not start with two numbers.</summary>
    public static (int Major, int Minor)? MajorMinor(string version)
    {
        var m = Regex.Match(version, @"^(\d+)\.(\d+)", RegexOptions.CultureInvariant);
        return m.Success && int.TryParse(m.Groups[1].Value, out int major) && int.TryParse(m.Groups[2].Value, out int minor) ? (major, minor) : null;
    }

    static IReadOnlyList<ElfLibrary> DependencyOrder(List<ElfLibrary> libraries)
    {
        var bySoName = libraries.ToDictionary(l => l.SoName ?? Path.GetFileName(l.Path));
        var ordered = new List<ElfLibrary>();
        var state = new Dictionary<ElfLibrary, bool>(); // false: visiting, true: done
        void Visit(ElfLibrary lib)
        {
            if (state.TryGetValue(lib, out bool done))
            {
                if (!done) throw new InvalidDataException($"{lib.Path}: circular DT_NEEDED among libtorch's libraries");
                return;
            }
            state[lib] = false;
            foreach (var need in lib.Needed)
                if (bySoName.TryGetValue(need, out var dep) && !ReferenceEquals(dep, lib)) Visit(dep);
            state[lib] = true;
            ordered.Add(lib);
        }
        foreach (var lib in libraries) Visit(lib);
        return ordered;
    }
}
