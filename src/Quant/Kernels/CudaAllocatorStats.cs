using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The CUDA caching allocator's allocated and reserved bytes (current and peak) for one device, its peak reset and
/// its cache release, read from the libtorch this process runs on: torch.cuda.memory_allocated / memory_reserved /
/// max_* / reset_peak_memory_stats / empty_cache, which TorchSharp 0.107 does not expose. The allocator's accessors
/// are inline in the C++ headers (not exported), but <c>c10::GetAllocator(DeviceType const&amp;)</c> is: for CUDA it
/// returns the caching allocator, a <c>c10::DeviceAllocator</c> (PyTorch 2.8+), whose virtual <c>getDeviceStats</c>,
/// <c>resetPeakStats</c> and <c>emptyCache</c> are called through its vtable with the slots and offsets of
/// <see cref="CudaAllocatorLayout"/>.
/// Calling convention (Itanium C++ ABI, x86-64 System V): a class returned in memory has its buffer's address passed
/// first and returned in rax, then <c>this</c>, then the int8 device index; <c>emptyCache</c>'s MempoolId_t (a pair of
/// two uint64, trivially copyable) travels in the two registers after <c>this</c>: (0, 0) is the default pool.
///
/// <see cref="Open"/> refuses rather than guesses: not Linux x86-64, no CUDA libtorch mapped, a version not in the
/// layout table, an export missing, a vtable or function pointer outside libtorch's mapped files, or a self-check
/// that fails (a 64 MiB tensor must raise allocated by exactly 64 MiB, freeing it must bring it back, releasing the
/// cache must leave allocated alone and not raise reserved, and a peak reset must bring the peak down to the current
/// value) each give a one-line reason instead of an instance.
/// An instance is immutable and thread-safe (the allocator takes its own lock); whoever needs one opens it.
/// </summary>
public sealed unsafe class CudaAllocatorStats
{
    /// <summary><c>c10::GetAllocator(c10::DeviceType const&amp;)</c>, exported by libc10.so (C10_API).</summary>
    public const string GetAllocatorSymbol = "_ZN3c1012GetAllocatorERKNS_10DeviceTypeE";

    /// <summary>c10::DeviceType::CUDA (an int8 enum).</summary>
    const sbyte CudaDeviceType = 1;

    /// <summary>The size of the self-check's tensor: a multiple of the allocator's 512-byte rounding, so exact.</summary>
    public const long SelfCheckBytes = 64L << 20;

    /// <summary>Room past the table's sizeof(DeviceStats) in the return buffer, so a struct that grew in a patch
    /// release cannot write past it before the self-check notices.</summary>
    const int ReturnSlack = 1024;

    readonly IntPtr _allocator;
    readonly delegate* unmanaged<byte*, IntPtr, sbyte, byte*> _getDeviceStats;
    readonly delegate* unmanaged<IntPtr, sbyte, void> _resetPeakStats;
    readonly delegate* unmanaged<IntPtr, ulong, ulong, void> _emptyCache;

    /// <summary>The layout used (slots and offsets) and the libtorch version it was chosen for.</summary>
    public CudaAllocatorLayout Layout { get; }

    /// <summary>The version the loaded libtorch says it is ("2.11.0+cu130").</summary>
    public string LibTorchVersion { get; }

    /// <summary>The CUDA device index the counters are for.</summary>
    public int DeviceIndex { get; }

    CudaAllocatorStats(IntPtr allocator, IntPtr getDeviceStats, IntPtr resetPeakStats, IntPtr emptyCache, CudaAllocatorLayout layout,
        string version, int device)
    {
        _allocator = allocator;
        _getDeviceStats = (delegate* unmanaged<byte*, IntPtr, sbyte, byte*>)getDeviceStats;
        _resetPeakStats = (delegate* unmanaged<IntPtr, sbyte, void>)resetPeakStats;
        _emptyCache = (delegate* unmanaged<IntPtr, ulong, ulong, void>)emptyCache;
        Layout = layout;
        LibTorchVersion = version;
        DeviceIndex = device;
    }

    /// <summary>An opened reader, or the one-line reason there is none (<see cref="Stats"/> null); the self-check's
    /// figures when it ran (allocated before, with and after the 64 MiB tensor, the peak before and after a reset), and
    /// <paramref name="Before"/>, the counters as the reader found them: their peaks are everything the process did
    /// until then (loading the model, when a run opens the reader after it, as `bench train` and `train` do).</summary>
    public sealed record Opening(CudaAllocatorStats? Stats, string? Reason, string? LibTorchVersion, string? SelfCheck = null,
        CudaAllocatorCounters? Before = null);

    /// <summary>The counters now.</summary>
    public CudaAllocatorCounters Read()
    {
        int bytes = Layout.DeviceStatsBytes + ReturnSlack;
        long* buffer = stackalloc long[(bytes + 7) / 8]; // 8-aligned, as DeviceStats (int64 members) needs
        byte* returned = _getDeviceStats((byte*)buffer, _allocator, (sbyte)DeviceIndex);
        if (returned != (byte*)buffer) throw new InvalidOperationException("getDeviceStats returned another buffer than the one passed: the allocator layout is wrong");
        return Layout.Read(new ReadOnlySpan<byte>(buffer, bytes));
    }

    /// <summary>Resets the allocator's peaks to their current values (torch.cuda.reset_peak_memory_stats).</summary>
    public void ResetPeak() => _resetPeakStats(_allocator, (sbyte)DeviceIndex);

    /// <summary>
    /// Gives the blocks the allocator caches but no tensor uses back to the driver (torch.cuda.empty_cache), on every
    /// device, from the default pool. The self-check runs it when the reader opens, and a training run once more after
    /// the model is built: quantize-on-load's transients leave reserved memory that the step may never need, and that
    /// the device (and nvidia-smi) counts as used.
    /// </summary>
    public void ReleaseCache() => _emptyCache(_allocator, 0, 0);

    /// <summary>Opens the reader for <paramref name="device"/> (a CUDA device of the libtorch this process runs on).</summary>
    public static Opening Open(Device device)
    {
        if (device.type != DeviceType.CUDA) return new(null, $"{device} is not a CUDA device", null);
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return new(null, "read only on Linux x86-64 (Itanium C++ ABI)", null);
        var map = ProcessMemoryMap.Current();
        var c10 = map.PathsNamed("libc10.so");
        if (c10.Count != 1) return new(null, c10.Count == 0 ? "libc10.so is not loaded" : $"two copies of libc10.so are loaded ({string.Join(", ", c10)})", null);
        string dir = Path.GetDirectoryName(c10[0])!;
        if (!map.PathsNamed("libc10_cuda.so").Any(p => Path.GetDirectoryName(p) == dir))
            return new(null, $"no CUDA libtorch loaded (no libc10_cuda.so beside {c10[0]})", null);
        string? version = ReadVersion(dir);
        if (CudaAllocatorLayout.For(version, out string why) is not { } layout) return new(null, why, version);
        try
        {
            return OpenVerified(c10[0], dir, layout, version!, device);
        }
        catch (Exception e) when (e is InvalidOperationException or DllNotFoundException or ExternalException) // ExternalException: libtorch's error (no memory for the self-check's tensor)
        {
            return new(null, e.Message, version);
        }
    }

    static Opening OpenVerified(string c10, string dir, CudaAllocatorLayout layout, string version, Device device)
    {
        if (!NativeLibrary.TryLoad(c10, out IntPtr handle) || !NativeLibrary.TryGetExport(handle, GetAllocatorSymbol, out IntPtr getAllocator))
            return new(null, $"{c10} does not export c10::GetAllocator", version);
        // The allocator's per-device state exists once the device has had an allocation; the self-check's tensor
        // also gives the concrete device index ("cuda" alone means the current device).
        using var scope = torch.NewDisposeScope();
        var warm = torch.empty(1, ScalarType.Byte, device);
        int index = warm.device_index;
        if (index < 0 || index >= Math.Min(cuda.device_count(), 128))
            return new(null, $"device index {index} is outside the {cuda.device_count()} CUDA devices", version);
        var map = ProcessMemoryMap.Current(); // after the device's first use, which may load more of libtorch's libraries

        sbyte type = CudaDeviceType;
        IntPtr allocator = ((delegate* unmanaged<sbyte*, IntPtr>)getAllocator)(&type);
        if (allocator == IntPtr.Zero || allocator % 8 != 0) return new(null, $"c10::GetAllocator(CUDA) returned {allocator:x}", version);
        ulong vtable = *(ulong*)allocator;
        int lastSlot = Math.Max(Math.Max(layout.GetDeviceStatsSlot, layout.ResetPeakStatsSlot), layout.EmptyCacheSlot);
        if (map.Find(vtable, (ulong)(lastSlot + 1) * 8) is not { Readable: true } table || Path.GetDirectoryName(table.Path) != dir)
            return new(null, $"the CUDA allocator's vtable ({vtable:x}) is not in a library of {dir}", version);
        IntPtr Slot(int slot, string name)
        {
            ulong fn = ((ulong*)vtable)[slot];
            if (map.Find(fn) is not { Executable: true } code || Path.GetDirectoryName(code.Path) != dir)
                throw new InvalidOperationException($"vtable slot {slot} ({name}) points outside libtorch's code ({fn:x}): allocator layout wrong for libtorch {version}");
            return (IntPtr)(long)fn;
        }
        var stats = new CudaAllocatorStats(allocator, Slot(layout.GetDeviceStatsSlot, "getDeviceStats"),
            Slot(layout.ResetPeakStatsSlot, "resetPeakStats"), Slot(layout.EmptyCacheSlot, "emptyCache"), layout, version, index);
        var before = stats.Read();
        string? failure = Check(stats, device, out string seen);
        return failure is null ? new(stats, null, version, seen, before)
            : new(null, $"allocator self-check failed for libtorch {version}: {failure}", version, seen);
    }

    /// <summary>Allocates and frees a <see cref="SelfCheckBytes"/> tensor and resets the peak; null when every figure moved
    /// as it must, else what did not. <paramref name="seen"/> gets the figures.</summary>
    static string? Check(CudaAllocatorStats stats, Device device, out string seen)
    {
        var before = stats.Read();
        CudaAllocatorCounters with;
        using (var scope = torch.NewDisposeScope())
        {
            torch.empty(SelfCheckBytes, ScalarType.Byte, device); // held by the scope until it ends
            with = stats.Read();
        }
        var after = stats.Read();
        stats.ReleaseCache();
        var released = stats.Read();
        stats.ResetPeak();
        var reset = stats.Read();
        seen = $"allocated {before.AllocatedCurrent} -> {with.AllocatedCurrent} with a {SelfCheckBytes}-byte tensor -> {after.AllocatedCurrent} freed; reserved {after.ReservedCurrent} -> {released.ReservedCurrent} after emptyCache; peak {after.AllocatedPeak} -> {reset.AllocatedPeak} after reset";
        foreach (var c in new[] { before, with, after, reset })
            if (c.Inconsistency() is { } bad) return bad;
        if (with.AllocatedCurrent - before.AllocatedCurrent != SelfCheckBytes) return $"allocated rose by {with.AllocatedCurrent - before.AllocatedCurrent} bytes for a {SelfCheckBytes}-byte tensor";
        if (after.AllocatedCurrent != before.AllocatedCurrent) return $"allocated {after.AllocatedCurrent} after freeing the tensor, {before.AllocatedCurrent} before it";
        if (released.AllocatedCurrent != after.AllocatedCurrent || released.ReservedCurrent > after.ReservedCurrent)
            return $"emptyCache changed allocated {after.AllocatedCurrent} -> {released.AllocatedCurrent} or raised reserved {after.ReservedCurrent} -> {released.ReservedCurrent}";
        if (with.AllocatedPeak < with.AllocatedCurrent || after.AllocatedPeak < with.AllocatedCurrent) return $"peak {after.AllocatedPeak} below the {with.AllocatedCurrent} held with the tensor";
        if (reset.AllocatedPeak != reset.AllocatedCurrent || reset.ReservedPeak != reset.ReservedCurrent) return $"the peak reset left allocated {reset.AllocatedCurrent}/{reset.AllocatedPeak}, reserved {reset.ReservedCurrent}/{reset.ReservedPeak}";
        return null;
    }

    /// <summary>
    /// The version of the libtorch whose libraries are in <paramref name="libDir"/>, from the files beside them, read
    /// by the loader's own code (<see cref="QLoraNet.Native.LibTorchVersionFiles"/>, a source file linked into this
    /// assembly: this layer does not depend on the loader).
    /// </summary>
    public static string? ReadVersion(string libDir) => QLoraNet.Native.LibTorchVersionFiles.Read(libDir);
}
