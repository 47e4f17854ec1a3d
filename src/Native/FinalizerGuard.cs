using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace QLoraNet.Native;

/// <summary>
/// Keeps the .NET finalizer from freeing a TorchSharp Scalar or tensor while a native op on another thread still reads
/// it. TorchSharp 0.107 hands native handles to libLibTorchSharp as plain IntPtrs with no GC.KeepAlive after the call
/// (TorchSharp PRs #1434 and #1496, open, dispose such Scalars but are not released). So the Scalar it makes for an
/// argument (the alpha = 1 of every <c>a + b</c>, the 2.0 of <c>x * 2.0</c>) is unreachable once its handle is read; when
/// another thread's allocation starts a GC during the call, the finalizer thread deletes the Scalar while the op reads
/// it. Measured on this project's CPU machine with two threads allocating: 59 failed ops in 370,000 <c>a + b</c> in
/// 20 s ("Expected false to be true"; a fresh-clone CI failed with "Unknown scalar type"), and a freed Scalar can as
/// well be read as a wrong number. Any host with more than one managed thread is exposed: the test runner, an app
/// serving <c>IChatClient</c>, the training loop's background work.
/// <para>
/// The guard is a small native library (FinalizerGuard/finalizer_guard.c) that defines TorchSharp's two dispose
/// entry points, holds back the frees the finalizer thread asks for (<see cref="HoldMilliseconds"/>), and passes every
/// other free straight on; TorchSharp's imports are resolved through its handle, which finds every other function in
/// libLibTorchSharp.so (its DT_NEEDED). A Dispose (a dispose scope's, a using's) is never held, so memory behaves as
/// before; only objects nobody disposed wait a little longer. Linux only; elsewhere, or when it cannot be installed,
/// <see cref="Problem"/> says why, and the CLI's start line shows it. QLORANET_FINALIZER_GUARD=off leaves it out.
/// </para>
/// </summary>
public static unsafe class FinalizerGuard
{
    /// <summary>The native library's file name.</summary>
    public const string LibraryName = "libQLoraNetFinalizerGuard.so";

    /// <summary>The environment variable that turns the guard off (value "off").</summary>
    public const string Variable = "QLORANET_FINALIZER_GUARD";

    /// <summary>How long a finalizer's free is held: an op reads its Scalars and takes its own tensor references as
    /// it starts, microseconds after the handle was read, so seconds leave a margin of many orders of magnitude even on
    /// a loaded machine, at the cost of keeping only leaked objects alive a little longer.</summary>
    public const int HoldMilliseconds = 2000;

    static readonly object Gate = new();
    static IntPtr guardHandle;
    static delegate* unmanaged<void> markFinalizerThread;
    static delegate* unmanaged<int> finalizerKnown;
    static delegate* unmanaged<long> pending, heldTotal, releasedTotal;
    static delegate* unmanaged<void> releaseDue;

    /// <summary>Whether TorchSharp's imports resolve through the guard.</summary>
    public static bool IsActive { get; private set; }

    /// <summary>Why the guard is not active (null when it is, or before libtorch was loaded).</summary>
    public static string? Problem { get; private set; } = "not installed (libtorch not loaded through QLoraNet.Native)";

    /// <summary>Frees held back and not yet due.</summary>
    public static long Pending => IsActive ? pending() : 0;

    /// <summary>Frees held back since the start.</summary>
    public static long HeldTotal => IsActive ? heldTotal() : 0;

    /// <summary>Held frees made since the start (a free held is made once its hold is over, at the next dispose).</summary>
    public static long ReleasedTotal => IsActive ? releasedTotal() : 0;

    /// <summary>Frees what is due now (the guard does this on every dispose anyway).</summary>
    public static void ReleaseDue()
    {
        if (IsActive) releaseDue();
    }

    /// <summary>
    /// Installs the guard over <paramref name="libTorchSharp"/> (TorchSharp's bridge, already loaded) before TorchSharp
    /// makes its first native call. Never throws: a guard that cannot be installed leaves TorchSharp as it is and
    /// says why in <see cref="Problem"/>.
    /// </summary>
    /// <param name="libTorchSharp">the handle NativeLibrary.Load gave for libLibTorchSharp.so.</param>
    public static void Install(IntPtr libTorchSharp)
    {
        lock (Gate)
        {
            if (IsActive) return;
            Problem = TryInstall(libTorchSharp);
            IsActive = Problem is null;
        }
    }

    static string? TryInstall(IntPtr libTorchSharp)
    {
        if (Environment.GetEnvironmentVariable(Variable) is "off") return $"off ({Variable}=off)";
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return $"not built for {RuntimeInformation.RuntimeIdentifier}";
        string app = AppContext.BaseDirectory;
        string? path = new[] { Path.Combine(app, LibraryName), Path.Combine(app, "runtimes", "linux-x64", "native", LibraryName) }
            .FirstOrDefault(File.Exists);
        if (path is null) return $"{LibraryName} is not beside the app (rebuild, or reference the QLoraNet.Native package)";
        if (!NativeLibrary.TryLoad(path, out guardHandle)) return $"{path} does not load";
        try
        {
            var init = (delegate* unmanaged<IntPtr, IntPtr, long, void>)Export(guardHandle, "qln_guard_init");
            markFinalizerThread = (delegate* unmanaged<void>)Export(guardHandle, "qln_guard_mark_finalizer_thread");
            finalizerKnown = (delegate* unmanaged<int>)Export(guardHandle, "qln_guard_finalizer_known");
            pending = (delegate* unmanaged<long>)Export(guardHandle, "qln_guard_pending");
            heldTotal = (delegate* unmanaged<long>)Export(guardHandle, "qln_guard_held_total");
            releasedTotal = (delegate* unmanaged<long>)Export(guardHandle, "qln_guard_released_total");
            releaseDue = (delegate* unmanaged<void>)Export(guardHandle, "qln_guard_release_due");
            init(Export(libTorchSharp, "THSTorch_dispose_scalar"), Export(libTorchSharp, "THSTensor_dispose"), HoldMilliseconds);
        }
        catch (EntryPointNotFoundException e)
        {
            return e.Message;
        }

        MarkFinalizerThread();
        if (finalizerKnown() == 0) return "the finalizer thread did not run the marker's finalizer";
        try
        {
            var torchSharp = typeof(TorchSharp.torch).Assembly;   // typeof runs no static constructor: nothing loads yet
            IntPtr handle = guardHandle;
            NativeLibrary.SetDllImportResolver(torchSharp, (name, _, _) => name == "LibTorchSharp" ? handle : IntPtr.Zero);
        }
        catch (InvalidOperationException)
        {
            return "TorchSharp's native imports already have a resolver (set by the app)";
        }
        return null;
    }

    static IntPtr Export(IntPtr library, string name) =>
        NativeLibrary.TryGetExport(library, name, out IntPtr f) ? f : throw new EntryPointNotFoundException($"{name} is not exported");

    /// <summary>Lets the finalizer thread run one finalizer of ours, which tells the guard which thread it is.</summary>
    static void MarkFinalizerThread()
    {
        DropMarker();
        GC.Collect();
        GC.WaitForPendingFinalizers();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void DropMarker() => _ = new FinalizerThreadMarker();

    sealed class FinalizerThreadMarker
    {
        ~FinalizerThreadMarker() => markFinalizerThread();
    }
}
