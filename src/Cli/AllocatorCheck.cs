using System.Text.Json;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `info --allocator`: opens <see cref="CudaAllocatorStats"/> on the first CUDA device and prints one JSON object
/// with the layout it used, its self-check, and the allocator's counters at each step of allocating and freeing a
/// 1 GiB tensor and resetting the peak, so a GPU run can set them beside torch.cuda.memory_stats() from Python
/// (scripts/gpu/allocator_probe.sh). Exit code 0 when the counters were read and moved as they must, 1 otherwise.
/// </summary>
internal static class AllocatorCheck
{
    const long Gib = 1L << 30;

    public static int Run(TextWriter stdout)
    {
        var libtorch = LibTorchProbe.EnsureLoaded();
        var result = new Dictionary<string, object?> { ["check"] = "CUDA caching allocator counters", ["libtorch"] = libtorch.Summary };
        if (!cuda.is_available())
        {
            result["status"] = "unavailable";
            result["reason"] = "no CUDA device";
            result["ok"] = false;
            stdout.WriteLine(JsonSerializer.Serialize(result));
            return 1;
        }
        var opening = CudaAllocatorStats.Open(torch.CUDA);
        result["libtorch_version"] = opening.LibTorchVersion;
        result["self_check"] = opening.SelfCheck;
        if (opening.Stats is not { } stats)
        {
            result["status"] = "unavailable";
            result["reason"] = opening.Reason;
            result["ok"] = false;
            stdout.WriteLine(JsonSerializer.Serialize(result));
            return 1;
        }
        result["status"] = "available";
        var l = stats.Layout;
        result["layout"] = new Dictionary<string, object>
        {
            ["version"] = l.Version, ["get_device_stats_slot"] = l.GetDeviceStatsSlot, ["reset_peak_stats_slot"] = l.ResetPeakStatsSlot,
            ["empty_cache_slot"] = l.EmptyCacheSlot,
            ["device_stats_bytes"] = l.DeviceStatsBytes, ["allocated_bytes_offset"] = l.AllocatedBytesOffset, ["reserved_bytes_offset"] = l.ReservedBytesOffset,
        };
        result["device_index"] = stats.DeviceIndex;
        var phases = new List<Dictionary<string, object>>();
        void Phase(string name)
        {
            var c = stats.Read();
            phases.Add(new() { ["phase"] = name, ["allocated_current"] = c.AllocatedCurrent, ["allocated_peak"] = c.AllocatedPeak,
                ["reserved_current"] = c.ReservedCurrent, ["reserved_peak"] = c.ReservedPeak });
        }
        Phase("start");
        var start = stats.Read();
        CudaAllocatorCounters held;
        using (var scope = torch.NewDisposeScope())
        {
            torch.empty(Gib, ScalarType.Byte, torch.CUDA); // held by the scope until it ends
            Phase("after 1 GiB allocated");
            held = stats.Read();
        }
        Phase("after freeing it");
        var freed = stats.Read();
        stats.ReleaseCache();
        Phase("after emptyCache");
        var released = stats.Read();
        stats.ResetPeak();
        Phase("after resetPeakStats");
        var reset = stats.Read();
        result["phases"] = phases;
        var checks = new Dictionary<string, bool>
        {
            ["allocated_grew_by_1gib"] = held.AllocatedCurrent - start.AllocatedCurrent == Gib,
            ["freed_back_to_start"] = freed.AllocatedCurrent == start.AllocatedCurrent,
            ["peak_kept_after_free"] = freed.AllocatedPeak >= held.AllocatedCurrent,
            ["reserved_covers_allocated"] = held.ReservedCurrent >= held.AllocatedCurrent,
            ["empty_cache_gave_back_the_freed_gib"] = freed.ReservedCurrent - released.ReservedCurrent >= Gib && released.AllocatedCurrent == freed.AllocatedCurrent,
            ["peak_reset_to_current"] = reset.AllocatedPeak == reset.AllocatedCurrent && reset.ReservedPeak == reset.ReservedCurrent,
        };
        result["checks"] = checks;
        result["ok"] = checks.Values.All(v => v);
        stdout.WriteLine(JsonSerializer.Serialize(result));
        return checks.Values.All(v => v) ? 0 : 1;
    }
}
