using System.Runtime.InteropServices;

namespace QLoraNet.Native;

/// <summary>
/// The CUDA caching allocator's configuration this process starts with: <c>PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True</c>
/// where the user set nothing (Linux; PyTorch supports expandable segments only there).
/// <para>
/// Why: the caching allocator keeps freed blocks for reuse, and a training step frees and reallocates the same large
/// buffers layer after layer. Blocks of the wrong sizes then sit reserved but unused: 0.53 GiB against 0.39 GiB with
/// expandable segments on the 7B step (docs/BENCHMARKS.md, session 30), and 41 GiB of a 137 GiB out-of-memory on the
/// H200 (session 31, call 30). Every figure in docs/BENCHMARKS.md was measured with them (the scripts export the
/// variable), and Unsloth sets them by default; so the product starts with what was measured. A user's own value,
/// even an empty one, is left as it is.
/// </para>
/// The variable is read by libtorch (c10's getenv) when CUDA's allocator starts, after this has run (discovery runs
/// before the first torch call); it is set natively (setenv: .NET's SetEnvironmentVariable changes only its own copy
/// on Unix) and in .NET's copy (which child processes, the data-parallel ranks, inherit).
/// </summary>
public static class CudaAllocatorDefaults
{
    /// <summary>The allocator's environment variable.</summary>
    public const string Variable = "PYTORCH_CUDA_ALLOC_CONF";

    /// <summary>The variable's name from PyTorch 2.9 on; libtorch reads either.</summary>
    public const string NewVariable = "PYTORCH_ALLOC_CONF";

    /// <summary>The value set where none was given.</summary>
    public const string Default = "expandable_segments:True";

    /// <summary>Whether <see cref="Apply"/> set <see cref="Default"/> in this process (the user had set nothing).</summary>
    public static bool SetByDefault { get; private set; }

    /// <summary>Sets <see cref="Default"/> when <see cref="Variable"/> is unset, on Linux; returns what the process has now.</summary>
    public static string? Apply()
    {
        string? given = Environment.GetEnvironmentVariable(Variable);
        // PyTorch 2.9 renamed the variable PYTORCH_ALLOC_CONF (the old name still works): either one given is the user's.
        if (given is not null || Environment.GetEnvironmentVariable(NewVariable) is not null || !OperatingSystem.IsLinux()) return given;
        if (setenv(Variable, Default, 0) != 0) return NativeValue();   // set natively or not, say what libtorch will read
        Environment.SetEnvironmentVariable(Variable, Default);
        SetByDefault = true;
        return NativeValue();
    }

    /// <summary>One line for `info`: the value libtorch reads, and whose it is.</summary>
    public static string Describe() => NativeValue() is { } v
        ? $"{Variable}={v} ({(SetByDefault ? "QLoraNet's default; set the variable to choose another" : "as set")})"
        : Environment.GetEnvironmentVariable(NewVariable) is { } n ? $"{NewVariable}={n} (as set)" : $"{Variable} unset (libtorch's defaults)";

    /// <summary>The variable as native code (libtorch) reads it.</summary>
    public static string? NativeValue() => OperatingSystem.IsLinux() ? Marshal.PtrToStringUTF8(getenv(Variable)) : Environment.GetEnvironmentVariable(Variable);

    [DllImport("libc", SetLastError = true)] static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
    [DllImport("libc")] static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);
}
