namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The CUDA caching allocator's byte counters for one device, as torch.cuda.memory_stats() names them
/// ("allocated_bytes.all.current/peak", "reserved_bytes.all.current/peak"): allocated = bytes in tensors (blocks
/// handed out, rounded to the allocator's 512-byte granularity), reserved = bytes the allocator holds from the driver
/// (allocated plus its cache). A peak is the highest value since the allocator's last peak reset.
/// </summary>
public readonly record struct CudaAllocatorCounters(long AllocatedCurrent, long AllocatedPeak, long ReservedCurrent, long ReservedPeak)
{
    /// <summary>What makes these counters impossible for the allocator (negative, a peak below its current value,
    /// allocated above reserved), or null when they are consistent.</summary>
    public string? Inconsistency() =>
        AllocatedCurrent < 0 || ReservedCurrent < 0 ? $"negative counters (allocated {AllocatedCurrent}, reserved {ReservedCurrent})"
        : AllocatedPeak < AllocatedCurrent || ReservedPeak < ReservedCurrent ? $"a peak below its current value (allocated {AllocatedCurrent}/{AllocatedPeak}, reserved {ReservedCurrent}/{ReservedPeak})"
        : AllocatedCurrent > ReservedCurrent ? $"allocated {AllocatedCurrent} above reserved {ReservedCurrent}"
        : null;
}
