using QLoraNet.Models;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Measures memory per interval for the metrics and the progress line. Host: the resident set now and the process's
/// peak so far (VmHWM on Linux, the peak working set elsewhere; not reset per interval, because resetting VmHWM
/// would change what every other run or measurement in the process sees). Device (CUDA runs): the caching
/// allocator's allocated and reserved peaks, read from its own counters (<see cref="CudaAllocatorStats"/>) and
/// reset at the start of each interval, so each is the true peak within the interval (inside the step, not a sample
/// after it); when the monitor starts, after the model is loaded, the blocks loading left cached go back to the
/// driver (<see cref="CudaAllocatorStats.ReleaseCache"/>) and the allocator's peak is reset, so loading's transient
/// peak is not counted. Beside them the driver's used memory, sampled by <see cref="Observe"/> (after
/// each step and each evaluation) and kept as the interval's maximum (device-wide, <see cref="CudaDeviceMemory"/>).
/// The run's overall peak is kept for the final summary.
/// </summary>
public sealed class MemoryMonitor
{
    readonly bool _cuda;
    readonly CudaAllocatorStats? _allocator;
    double? _deviceIntervalPeak;

    /// <summary>Opens the allocator's counters for a CUDA <paramref name="device"/> (nothing on CPU).</summary>
    public MemoryMonitor(Device device) : this(device, device.type == DeviceType.CUDA ? CudaAllocatorStats.Open(device) : null) { }

    /// <summary>With an already opened (or refused) allocator reader; null on CPU.</summary>
    public MemoryMonitor(Device device, CudaAllocatorStats.Opening? allocator)
    {
        _cuda = device.type == DeviceType.CUDA;
        _allocator = allocator?.Stats;
        AllocatorUnavailable = _cuda && _allocator is null ? allocator?.Reason ?? "not opened" : null;
        _allocator?.ReleaseCache();   // what loading left cached goes back to the driver (the device's used memory drops)
        _allocator?.ResetPeak();
    }

    /// <summary>On a CUDA run whose allocator counters cannot be read: why (allocated/reserved then stay empty).</summary>
    public string? AllocatorUnavailable { get; }

    /// <summary>The maximum of every interval so far (null before the first).</summary>
    public MemorySample? RunPeak { get; private set; }

    /// <summary>Samples the device's used memory (a no-op on CPU): call after each step and evaluation.</summary>
    public void Observe()
    {
        if (!_cuda || CudaDeviceMemory.Query() is not { } m) return;
        double used = m.Used / 1048576.0;
        _deviceIntervalPeak = Math.Max(_deviceIntervalPeak ?? 0, used);
    }

    /// <summary>Ends the interval: its figures, then a new interval starts (the allocator's peaks reset).</summary>
    public MemorySample TakeInterval()
    {
        Observe();
        var counters = _allocator?.Read();
        _allocator?.ResetPeak();
        var sample = new MemorySample(HostMemory.ResidentOrWorkingSet / 1048576.0, HostMemory.PeakOrPeakWorkingSet / 1048576.0,
            _deviceIntervalPeak, counters?.AllocatedPeak / 1048576.0, counters?.ReservedPeak / 1048576.0);
        _deviceIntervalPeak = null;
        RunPeak = RunPeak is null ? sample : RunPeak.Max(sample);
        return sample;
    }
}
