using System.Runtime.InteropServices;

namespace QLoraNet.Distributed;

/// <summary>NCCL's communicator id: 128 opaque bytes made by rank 0 (ncclGetUniqueId) and passed to every rank.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NcclUniqueId
{
    public const int Size = 128;
    public fixed byte Internal[Size];
}

/// <summary>
/// The leading fields of NCCL's ncclConfig_t as of NCCL 2.14 (size, magic, version, blocking). NCCL copies
/// <c>size</c> bytes over its defaults and resets every field newer than <c>version</c>, so this short form works
/// with every NCCL since 2.14; the one trailing int is padding (the 2.17 field cgaClusterSize, left undefined).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct NcclConfig
{
    public nuint Size;
    public uint Magic;
    public uint Version;
    public int Blocking;
    public int Undefined;

    public const uint ApiMagic = 0xcafebeef;
    public const int UndefinedInt = int.MinValue;   // NCCL_CONFIG_UNDEF_INT
    public const uint Version2_14 = 21400;           // NCCL_VERSION(2, 14, 0)

    /// <summary>A non-blocking communicator: calls return ncclInProgress instead of waiting on peers, so every wait
    /// is ours, with a deadline, and ncclCommAbort can always stop it.</summary>
    public static unsafe NcclConfig NonBlocking() => new()
    {
        Size = (nuint)sizeof(NcclConfig), Magic = ApiMagic, Version = Version2_14, Blocking = 0, Undefined = UndefinedInt,
    };
}

/// <summary>
/// libnccl.so.2 and the entry points the NCCL backend calls (nccl.h, NCCL >= 2.14), bound as function pointers of
/// one loaded instance (no process-wide resolver). Found, in order: <c>QLORANET_NCCL_LIBRARY</c> (a file path); the
/// dynamic loader's search (LD_LIBRARY_PATH, and the copy libtorch_cuda already loaded, which the loader reuses);
/// next to each loaded or LD_LIBRARY_PATH libtorch (<c>torch/lib</c>) and in the pip wheels beside it
/// (<c>site-packages/nvidia/*/lib</c>, where PyTorch's nvidia-nccl-cu* dependency puts it).
/// </summary>
internal sealed unsafe class NcclLibrary
{
    public const string FileName = "libnccl.so.2";
    public const string PathVar = "QLORANET_NCCL_LIBRARY";

    // ncclResult_t
    public const int Success = 0, InProgress = 7;
    // ncclDataType_t
    public const int Int8 = 0, Uint8 = 1, Int32 = 2, Int64 = 4, Float16 = 6, Float32 = 7, Float64 = 8, BFloat16 = 9;
    // ncclRedOp_t
    public const int Sum = 0;

    public string Path { get; }
    public int Version { get; }

    public readonly delegate* unmanaged<NcclUniqueId*, int> GetUniqueId;
    public readonly delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, NcclConfig*, int> CommInitRankConfig;
    public readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> AllReduce;  // send, recv, count, type, op, comm, stream
    public readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> Broadcast;  // send, recv, count, type, root, comm, stream
    public readonly delegate* unmanaged<IntPtr, int*, int> CommGetAsyncError;
    public readonly delegate* unmanaged<IntPtr, int> CommFinalize;
    public readonly delegate* unmanaged<IntPtr, int> CommDestroy;
    public readonly delegate* unmanaged<IntPtr, int> CommAbort;
    readonly delegate* unmanaged<int, IntPtr> _getErrorString;
    readonly delegate* unmanaged<IntPtr, IntPtr> _getLastError;

    NcclLibrary(string path, IntPtr handle)
    {
        Path = path;
        IntPtr F(string name) => NativeLibrary.TryGetExport(handle, name, out var p) ? p
            : throw new InvalidOperationException($"{path} has no {name}: NCCL 2.14 or newer is needed");
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)F("ncclGetUniqueId");
        CommInitRankConfig = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, NcclConfig*, int>)F("ncclCommInitRankConfig");
        AllReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)F("ncclAllReduce");
        Broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)F("ncclBroadcast");
        CommGetAsyncError = (delegate* unmanaged<IntPtr, int*, int>)F("ncclCommGetAsyncError");
        CommFinalize = (delegate* unmanaged<IntPtr, int>)F("ncclCommFinalize");
        CommDestroy = (delegate* unmanaged<IntPtr, int>)F("ncclCommDestroy");
        CommAbort = (delegate* unmanaged<IntPtr, int>)F("ncclCommAbort");
        _getErrorString = (delegate* unmanaged<int, IntPtr>)F("ncclGetErrorString");
        _getLastError = NativeLibrary.TryGetExport(handle, "ncclGetLastError", out var le) ? (delegate* unmanaged<IntPtr, IntPtr>)le : null;
        var getVersion = (delegate* unmanaged<int*, int>)F("ncclGetVersion");
        int v;
        Version = getVersion(&v) == Success ? v : 0;
    }

    /// <summary>"2.27.5" from NCCL's version code.</summary>
    public string VersionText => Version >= 10000 ? $"{Version / 10000}.{Version / 100 % 100}.{Version % 100}" : $"{Version / 1000}.{Version / 100 % 10}.{Version % 100}";

    /// <summary>ncclGetErrorString, plus ncclGetLastError's detail when the library has it.</summary>
    public string Describe(int result, IntPtr comm = default)
    {
        string text = Marshal.PtrToStringAnsi(_getErrorString(result)) ?? $"error {result}";
        if (_getLastError != null)
        {
            string? last = Marshal.PtrToStringAnsi(_getLastError(comm));
            if (!string.IsNullOrWhiteSpace(last)) text += $": {last.Trim()}";
        }
        return text;
    }

    public static NcclLibrary Load()
    {
        var tried = new List<string>();
        if (Environment.GetEnvironmentVariable(PathVar) is { Length: > 0 } explicitPath)
        {
            if (!File.Exists(explicitPath)) throw new FileNotFoundException($"{PathVar}={explicitPath}: no such file", explicitPath);
            return new NcclLibrary(explicitPath, NativeLibrary.Load(explicitPath));
        }
        if (NativeLibrary.TryLoad(FileName, out var h)) return new NcclLibrary(MappedFile("libnccl") ?? FileName + " (dynamic loader search)", h);
        tried.Add("the dynamic loader's search path (LD_LIBRARY_PATH, ld.so.cache)");
        foreach (var candidate in Candidates())
        {
            tried.Add(candidate);
            if (File.Exists(candidate) && NativeLibrary.TryLoad(candidate, out h)) return new NcclLibrary(candidate, h);
        }
        throw new DllNotFoundException($"{FileName} not found; looked in {string.Join(", ", tried.Distinct())}. It comes with a CUDA PyTorch "
            + $"(pip install torch: site-packages/nvidia/nccl/lib); put that directory on LD_LIBRARY_PATH, or set {PathVar} to the file");
    }

    /// <summary>The file a loaded library whose name starts with <paramref name="prefix"/> was mapped from (the loader
    /// may have reused the copy libtorch_cuda loaded, wherever that was), for the logs; null when unreadable.</summary>
    static string? MappedFile(string prefix)
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash >= 0 && System.IO.Path.GetFileName(line[slash..]).StartsWith(prefix, StringComparison.Ordinal)) return line[slash..];
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>Files to try: beside each libtorch directory (loaded in this process, or on LD_LIBRARY_PATH) and in
    /// the nvidia/*/lib wheels of the same site-packages.</summary>
    static IEnumerable<string> Candidates()
    {
        var torchDirs = new List<string>();
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int slash = line.IndexOf('/');
                if (slash < 0) continue;
                string file = line[slash..];
                string name = System.IO.Path.GetFileName(file);
                if (name.StartsWith("libtorch_cuda", StringComparison.Ordinal) || name.StartsWith("libc10_cuda", StringComparison.Ordinal) || name == "libtorch.so")
                    torchDirs.Add(System.IO.Path.GetDirectoryName(file)!);
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        foreach (var dir in (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            torchDirs.Add(dir);
        foreach (var dir in torchDirs.Distinct())
        {
            yield return System.IO.Path.Combine(dir, FileName);
            var sitePackages = System.IO.Path.GetFullPath(System.IO.Path.Combine(dir, "..", ".."));
            var nvidia = System.IO.Path.Combine(sitePackages, "nvidia");
            if (!Directory.Exists(nvidia)) continue;
            foreach (var sub in Directory.EnumerateDirectories(nvidia).Order())
                yield return System.IO.Path.Combine(sub, "lib", FileName);
        }
    }
}
