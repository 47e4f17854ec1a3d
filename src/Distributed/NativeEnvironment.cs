using System.Runtime.InteropServices;

namespace QLoraNet.Distributed;

/// <summary>
/// The C library's environment, which native libraries (NCCL) read with getenv. .NET's
/// Environment.SetEnvironmentVariable changes only the managed copy on Unix, so a setting meant for NCCL must be
/// made here. Linux/macOS only.
/// </summary>
internal static partial class NativeEnvironment
{
    [LibraryImport("libc", EntryPoint = "getenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr GetEnv(string name);

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    public static string? Get(string name) => GetEnv(name) is var p && p != IntPtr.Zero ? Marshal.PtrToStringUTF8(p) : null;

    /// <summary>Sets <paramref name="name"/> unless it is already set.</summary>
    public static void SetDefault(string name, string value)
    {
        if (SetEnv(name, value, 0) != 0) throw new InvalidOperationException($"setenv({name}) failed: errno {Marshal.GetLastPInvokeError()}");
    }
}
