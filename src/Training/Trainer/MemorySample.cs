namespace QLoraNet.Training.Trainer;

/// <summary>
/// Memory over one log interval (the steps since the previous sample), each figure named for what it measures:
/// the host process's resident set now and its peak so far, and the peak of the CUDA device's used
/// memory (device-wide: allocator cache, context, other processes; null on CPU). In MiB.
/// </summary>
public sealed record MemorySample(double HostRssMb, double HostPeakRssMb, double? DeviceUsedPeakMb)
{
    /// <summary>The larger of each figure (the run's peak from its intervals).</summary>
    public MemorySample Max(MemorySample other) => new(Math.Max(HostRssMb, other.HostRssMb),
        Math.Max(HostPeakRssMb, other.HostPeakRssMb),
        DeviceUsedPeakMb is { } a && other.DeviceUsedPeakMb is { } b ? Math.Max(a, b) : DeviceUsedPeakMb ?? other.DeviceUsedPeakMb);
}
