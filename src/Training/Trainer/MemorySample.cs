namespace QLoraNet.Training.Trainer;

/// <summary>
/// Memory over one log interval (the steps since the previous sample), each figure named for what it measures, in
/// MiB: the host process's resident set now and its peak so far; on CUDA, the peaks over the interval of the caching
/// allocator's allocated bytes (in tensors) and reserved bytes (held from the driver: allocated plus cache), as
/// torch.cuda.max_memory_allocated / max_memory_reserved report them, and the peak of the device's used memory
/// (device-wide: allocator cache, context, other processes). Device figures are null on CPU; the allocator's also
/// where its counters cannot be read (<see cref="QLoraNet.Quant.Kernels.CudaAllocatorStats"/>).
/// </summary>
public sealed record MemorySample(double HostRssMb, double HostPeakRssMb, double? DeviceUsedPeakMb,
    double? DeviceAllocatedPeakMb = null, double? DeviceReservedPeakMb = null)
{
    /// <summary>The larger of each figure (the run's peak from its intervals); a figure missing on one side is the other's.</summary>
    public MemorySample Max(MemorySample other) => new(Math.Max(HostRssMb, other.HostRssMb),
        Math.Max(HostPeakRssMb, other.HostPeakRssMb), Larger(DeviceUsedPeakMb, other.DeviceUsedPeakMb),
        Larger(DeviceAllocatedPeakMb, other.DeviceAllocatedPeakMb), Larger(DeviceReservedPeakMb, other.DeviceReservedPeakMb));

    static double? Larger(double? a, double? b) => a is { } x && b is { } y ? Math.Max(x, y) : a ?? b;
}
