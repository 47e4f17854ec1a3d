using System.Buffers.Binary;
using System.Text.RegularExpressions;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// Where libtorch's CUDA caching allocator keeps what <see cref="CudaAllocatorStats"/> reads, for one PyTorch
/// version: the vtable slots of <c>c10::DeviceAllocator::getDeviceStats</c> and <c>resetPeakStats</c>, and the byte
/// offsets of <c>allocated_bytes</c> and <c>reserved_bytes</c> in the <c>DeviceStats</c> it returns. None of these is
/// exported (the accessors are inline in the headers), so they are read from the headers of each version and
/// confirmed on a GPU by scripts/gpu/allocator_probe.sh, which compiles the same headers and prints them.
/// Only versions in <see cref="Known"/> are ever called: a wrong slot would run another virtual with the wrong
/// arguments, so an unlisted version gets a reason instead of a guess.
/// </summary>
/// <param name="GetDeviceStatsSlot">vtable index of <c>DeviceStats getDeviceStats(DeviceIndex)</c>.</param>
/// <param name="ResetPeakStatsSlot">vtable index of <c>void resetPeakStats(DeviceIndex)</c>.</param>
/// <param name="EmptyCacheSlot">vtable index of <c>void emptyCache(MempoolId_t)</c>.</param>
/// <param name="DeviceStatsBytes">sizeof(DeviceStats): the return buffer's size.</param>
/// <param name="AllocatedBytesOffset">offsetof(DeviceStats, allocated_bytes).</param>
/// <param name="ReservedBytesOffset">offsetof(DeviceStats, reserved_bytes).</param>
public sealed record CudaAllocatorLayout(string Version, int GetDeviceStatsSlot, int ResetPeakStatsSlot, int EmptyCacheSlot, int DeviceStatsBytes,
    int AllocatedBytesOffset, int ReservedBytesOffset)
{
    /// <summary>
    /// PyTorch 2.11 (c10/core/Allocator.h, c10/core/CachingDeviceAllocator.h). Itanium C++ ABI vtable of
    /// <c>c10::Allocator</c>: 0-1 the two destructor entries, 2 allocate, 3 is_simple_data_ptr, 4 raw_deleter,
    /// 5 copy_data (clone, raw_allocate, raw_deallocate are not virtual); then <c>c10::DeviceAllocator</c>'s, in
    /// declaration order: 6 initialized, 7 emptyCache, 8 recordStream, 9 getDeviceStats, 10 resetAccumulatedStats,
    /// 11 resetPeakStats, 12 getMemoryInfo. DeviceStats: nine StatArrays (allocation, segment, active,
    /// inactive_split, allocated_bytes, reserved_bytes, ...), each Stat[3] (aggregate, small pool, large pool) of
    /// Stat {int64 current, peak, allocated, freed} = 96 bytes, so allocated_bytes at 4 x 96 = 384 and
    /// reserved_bytes at 480; then the counters after them: 976 bytes in all in 2.11 (sizeof, from its headers on the GPU
    /// machine; the call is given 1 KiB more than that anyway).
    /// </summary>
    public static readonly IReadOnlyDictionary<string, CudaAllocatorLayout> Known = new Dictionary<string, CudaAllocatorLayout>
    {
        ["2.11"] = new("2.11", GetDeviceStatsSlot: 9, ResetPeakStatsSlot: 11, EmptyCacheSlot: 7, DeviceStatsBytes: 976, AllocatedBytesOffset: 384, ReservedBytesOffset: 480),
    };

    /// <summary>Within a Stat: current at 0, peak at 8; the aggregate (all pools) Stat is the array's first.</summary>
    const int CurrentOffset = 0, PeakOffset = 8, StatBytes = 32;

    /// <summary>The layout of a libtorch version ("2.11.0+cu130": by major.minor), or null and why not.</summary>
    public static CudaAllocatorLayout? For(string? libTorchVersion, out string reason)
    {
        reason = "";
        var m = libTorchVersion is null ? null : Regex.Match(libTorchVersion, @"^(\d+)\.(\d+)(?:\.|$|\+)", RegexOptions.CultureInvariant);
        if (m is not { Success: true })
        {
            reason = $"libtorch {libTorchVersion ?? "of unknown version"}: allocator layout not verified";
            return null;
        }
        string key = $"{m.Groups[1].Value}.{m.Groups[2].Value}";
        if (Known.TryGetValue(key, out var layout)) return layout;
        reason = $"libtorch {libTorchVersion}: allocator layout not verified (known: {string.Join(", ", Known.Keys)})";
        return null;
    }

    /// <summary>The aggregate allocated/reserved counters from a DeviceStats buffer (little-endian int64s).</summary>
    public CudaAllocatorCounters Read(ReadOnlySpan<byte> deviceStats)
    {
        if (deviceStats.Length < DeviceStatsBytes)
            throw new ArgumentException($"a DeviceStats buffer of {deviceStats.Length} bytes; libtorch {Version}'s is {DeviceStatsBytes}", nameof(deviceStats));
        return new CudaAllocatorCounters(Q(deviceStats, AllocatedBytesOffset + CurrentOffset), Q(deviceStats, AllocatedBytesOffset + PeakOffset),
            Q(deviceStats, ReservedBytesOffset + CurrentOffset), Q(deviceStats, ReservedBytesOffset + PeakOffset));
        static long Q(ReadOnlySpan<byte> s, int offset) => BinaryPrimitives.ReadInt64LittleEndian(s.Slice(offset, 8));
    }

    /// <summary>Whether the offsets leave room for a whole Stat inside the buffer (a check on the table itself).</summary>
    public bool IsConsistent => GetDeviceStatsSlot >= 0 && ResetPeakStatsSlot >= 0 && EmptyCacheSlot >= 0
        && AllocatedBytesOffset % 8 == 0 && ReservedBytesOffset % 8 == 0
        && AllocatedBytesOffset + StatBytes <= DeviceStatsBytes && ReservedBytesOffset + StatBytes <= DeviceStatsBytes;
}
