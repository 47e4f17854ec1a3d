using QLoraNet.Models;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Measures memory per interval for the metrics and the progress line. Host: the resident set now and the process's
/// peak so far (VmHWM on Linux, the peak working set elsewhere; not reset per interval, because resetting VmHWM
/// would change what every other run or measurement in the process sees). Device (CUDA runs): the driver's used
/// memory, sampled by <see cref="Observe"/> (after each step and each evaluation) and kept as the interval's
/// maximum. After a step the caching allocator still holds the blocks of the step's peak, so the sample after it
/// sees the reserved peak; the figure is device-wide (<see cref="CudaDeviceMemory"/>). The run's overall peak is
/// kept for the final summary.
/// </summary>
public sealed class MemoryMonitor(Device device)
{
    readonly bool _cuda = device.type == DeviceType.CUDA;
    double? _deviceIntervalPeak;

    /// <summary>The maximum of every interval so far (null before the first).</summary>
    public MemorySample? RunPeak { get; private set; }

    /// <summary>Samples the device (a no-op on CPU): call after each step and evaluation.</summary>
    public void Observe()
    {
        if (!_cuda || CudaDeviceMemory.Query() is not { } m) return;
        double used = m.Used / 1048576.0;
        _deviceIntervalPeak = Math.Max(_deviceIntervalPeak ?? 0, used);
    }

    /// <summary>Ends the interval: its figures, then a new interval starts.</summary>
    public MemorySample TakeInterval()
    {
        Observe();
        var sample = new MemorySample(HostMemory.ResidentOrWorkingSet / 1048576.0, HostMemory.PeakOrPeakWorkingSet / 1048576.0,
            _deviceIntervalPeak);
        _deviceIntervalPeak = null;
        RunPeak = RunPeak is null ? sample : RunPeak.Max(sample);
        return sample;
    }
}
