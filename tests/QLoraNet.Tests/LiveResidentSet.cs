using System.Runtime.InteropServices;
using QLoraNet.Models;

namespace QLoraNet.Tests;

/// <summary>
/// The process's resident set with glibc's free memory handed back first (<c>malloc_trim(0)</c>), for tests that
/// measure what a call keeps alive. Without the trim, a transient freed into glibc's heap stays resident: after a
/// large mapped block is freed, glibc raises its mmap threshold up to 32 MiB, so a 16 MiB temporary (a 4096 x 4096
/// int8 code tensor) comes from the heap and, once freed, still counts, which made such a measurement see 16 MiB
/// "held" in about one run in four. Kept tensors are live, so the trim never hides them.
/// </summary>
static class LiveResidentSet
{
    public static long Bytes
    {
        get
        {
            if (OperatingSystem.IsLinux())
            {
                try { MallocTrim(0); }
                catch (EntryPointNotFoundException) { }   // not glibc (musl): nothing to trim this way
                catch (DllNotFoundException) { }
            }
            return HostMemory.ResidentOrWorkingSet;
        }
    }

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);
}
