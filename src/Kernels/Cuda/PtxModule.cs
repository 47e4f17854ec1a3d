using System.Reflection;

namespace QLoraNet.Kernels.Cuda;

/// <summary>
/// One PTX image (built from its .cu by scripts/build_ptx.sh and embedded in an assembly, or read from a directory
/// during kernel development) loaded with the CUDA driver into the current context (cuModuleLoadData: the driver
/// compiles the PTX for the GPU at that point), with every kernel its op launches looked up once. An instance is
/// immutable: it is made by <see cref="Load"/> when the caller selects kernels (<see cref="FusedKernels.Load"/>,
/// Quant's KernelSelection), so a PTX that does not load or lacks a kernel is a reason reported up front, never a
/// surprise mid-run.
/// </summary>
public sealed class PtxModule
{
    readonly IReadOnlyDictionary<string, IntPtr> _functions;

    PtxModule(IntPtr context, IReadOnlyDictionary<string, IntPtr> functions, string source)
    {
        Context = context;
        _functions = functions;
        Source = source;
    }

    /// <summary>The CUDA context the module lives in (launches go there).</summary>
    public IntPtr Context { get; }

    /// <summary>Where the image came from: "embedded" or the file's path.</summary>
    public string Source { get; }

    /// <summary>The resource name of <paramref name="fileName"/> in <paramref name="assembly"/>.</summary>
    static string ResourceName(Assembly assembly, string fileName) => assembly.GetName().Name + "." + fileName;

    /// <summary>True when <paramref name="assembly"/> carries <paramref name="fileName"/> (scripts/build_ptx.sh builds it).</summary>
    public static bool IsEmbedded(Assembly assembly, string fileName) =>
        assembly.GetManifestResourceInfo(ResourceName(assembly, fileName)) is not null;

    /// <summary>
    /// Loads <paramref name="fileName"/> (from <paramref name="ptxDir"/> when that directory holds it, else the image
    /// embedded in <paramref name="assembly"/>) into the current CUDA context and looks up <paramref name="kernels"/>.
    /// libtorch must have made the context current (any CUDA tensor on the device does). Throws
    /// <see cref="InvalidOperationException"/> with the driver's message when anything fails.
    /// </summary>
    public static PtxModule Load(Assembly assembly, string fileName, IEnumerable<string> kernels, string? ptxDir = null)
    {
        byte[] text;
        string source;
        if (ptxDir is not null && File.Exists(Path.Combine(ptxDir, fileName)))
        {
            source = Path.Combine(ptxDir, fileName);
            text = File.ReadAllBytes(source);
        }
        else
        {
            using var s = assembly.GetManifestResourceStream(ResourceName(assembly, fileName))
                ?? throw new InvalidOperationException($"{fileName} is not embedded in this build (scripts/build_ptx.sh builds it)");
            text = new byte[s.Length];
            s.ReadExactly(text);
            source = "embedded";
        }
        var image = new byte[text.Length + 1]; // the driver wants a NUL-terminated image
        text.CopyTo(image, 0);
        try
        {
            var context = CudaDriver.CurrentContext();
            var module = CudaDriver.LoadModule(image);
            var functions = kernels.Distinct().ToDictionary(name => name, name => CudaDriver.GetFunction(module, name));
            return new PtxModule(context, functions, source);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            throw new InvalidOperationException($"the CUDA driver library cannot be used: {e.Message}", e);
        }
    }

    /// <summary>The kernel <paramref name="name"/>, one of those given to <see cref="Load"/>.</summary>
    public IntPtr Function(string name) =>
        _functions.TryGetValue(name, out var fn) ? fn : throw new ArgumentException($"kernel {name} was not loaded from this module");
}
