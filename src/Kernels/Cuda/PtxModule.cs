using System.Reflection;

namespace QLoraNet.Kernels.Cuda;

/// <summary>
/// One PTX image embedded in an assembly (built from its .cu by scripts/build_ptx.sh), loaded with the CUDA driver
/// into each context at most once (cuModuleLoadData: the driver compiles the PTX for the GPU at that point), with
/// its kernels looked up by name. A CUDA module belongs to the process's context, so an instance is meant to be
/// held in a static readonly field of the op that launches its kernels: the cache is of a process-wide resource,
/// like libtorch's own kernel cache, and holds no training state.
/// QLORANET_DISABLE_CUDA_KERNELS=1 turns every kernel off (the ops then run their torch-op references);
/// QLORANET_PTX_DIR=dir loads dir/NAME.ptx instead of the embedded image (kernel development).
/// </summary>
public sealed class PtxModule
{
    readonly Assembly _assembly;
    readonly string _resource;
    readonly string _fileName;
    readonly object _gate = new();
    readonly Dictionary<IntPtr, Dictionary<string, IntPtr>> _functionsByContext = new();
    string? _loadFailure;

    /// <param name="assembly">the assembly the PTX is embedded in.</param>
    /// <param name="fileName">the PTX file name, e.g. "rms_norm.ptx"; its resource is "{assembly name}.{fileName}".</param>
    public PtxModule(Assembly assembly, string fileName)
    {
        _assembly = assembly;
        _fileName = fileName;
        _resource = assembly.GetName().Name + "." + fileName;
    }

    /// <summary>Why the kernels of this module cannot run (null when they can, as far as is known before a launch).</summary>
    public string? Unavailable
    {
        get
        {
            if (Environment.GetEnvironmentVariable("QLORANET_DISABLE_CUDA_KERNELS") == "1") return "disabled by QLORANET_DISABLE_CUDA_KERNELS=1";
            if (_loadFailure is { } f) return f;
            if (DevelopmentPath() is null && _assembly.GetManifestResourceInfo(_resource) is null)
                return $"{_fileName} is not embedded in this build (scripts/build_ptx.sh builds it)";
            return null;
        }
    }

    /// <summary>
    /// The kernel <paramref name="name"/> in the current context, loading the module on first use. Null when it
    /// cannot be had (the reason is then in <see cref="Unavailable"/>, and the caller runs its reference).
    /// </summary>
    public IntPtr? TryFunction(string name)
    {
        if (Unavailable is not null) return null;
        lock (_gate)
        {
            try
            {
                var ctx = CudaDriver.CurrentContext();
                if (!_functionsByContext.TryGetValue(ctx, out var fns))
                {
                    fns = new Dictionary<string, IntPtr> { ["<module>"] = CudaDriver.LoadModule(Image()) };
                    _functionsByContext[ctx] = fns;
                }
                if (!fns.TryGetValue(name, out var fn))
                {
                    fn = CudaDriver.GetFunction(fns["<module>"], name);
                    fns[name] = fn;
                }
                return fn;
            }
            catch (Exception e) when (e is InvalidOperationException or DllNotFoundException or EntryPointNotFoundException)
            {
                _loadFailure = $"{_fileName}: {e.Message}";
                return null;
            }
        }
    }

    string? DevelopmentPath()
    {
        var dir = Environment.GetEnvironmentVariable("QLORANET_PTX_DIR");
        return dir is null ? null : Path.Combine(dir, _fileName);
    }

    /// <summary>The PTX text, NUL-terminated as cuModuleLoadData wants it.</summary>
    byte[] Image()
    {
        byte[] text;
        if (DevelopmentPath() is { } path) text = File.ReadAllBytes(path);
        else
        {
            using var s = _assembly.GetManifestResourceStream(_resource)!;
            text = new byte[s.Length];
            s.ReadExactly(text);
        }
        var image = new byte[text.Length + 1];
        text.CopyTo(image, 0);
        return image;
    }
}
