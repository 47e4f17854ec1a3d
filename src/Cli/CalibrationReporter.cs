using QLoraNet.Models;
using QLoraNet.Models.Calibration;
using QLoraNet.Quant.Kernels;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// Prints one line per calibrated layer to stderr, as the layer ends:
/// <c>calibrated layer 3/32 in 4.2 s (12.6 s so far); host peak RSS 1234 MiB; device used 20480 MiB (max 20480 MiB)</c>.
/// A run cut off by a time limit still says how far it got and what a layer costs (scripts/gpu/calibrated_7b.sh reads
/// these lines). The device figure is <see cref="CudaDeviceMemory"/>'s (device-wide, the caching allocator's reserve
/// included), read after the layer's kernels finished; its largest value is kept for the command's summary. The host
/// figure is the process's peak resident set (VmHWM) so far.
/// </summary>
public sealed class CalibrationReporter(TextWriter error, Device device)
{
    readonly bool _cuda = device.type == TorchSharp.DeviceType.CUDA;

    /// <summary>The largest device memory in use seen after a layer, MiB; null on the CPU or before the first layer.</summary>
    public double? DeviceMaxMiB { get; private set; }

    public void Report(CalibrationProgress p)
    {
        double? used = _cuda && CudaDeviceMemory.Query() is { } m ? m.Used / 1048576.0 : null;
        if (used is { } u) DeviceMaxMiB = Math.Max(DeviceMaxMiB ?? 0, u);
        error.WriteLine(Line(p, HostMemory.PeakResidentBytes, used, DeviceMaxMiB));
    }

    /// <summary>The progress line (figures that are null are left out).</summary>
    public static string Line(CalibrationProgress p, long? hostPeakBytes, double? deviceUsedMiB, double? deviceMaxMiB)
    {
        string line = $"calibrated layer {p.Layer + 1}/{p.Layers} in {p.Seconds:F1} s ({p.TotalSeconds:F1} s so far)";
        if (hostPeakBytes is { } h) line += $"; host peak RSS {h / 1048576.0:F0} MiB";
        if (deviceUsedMiB is { } d) line += $"; device used {d:F0} MiB (max {deviceMaxMiB ?? d:F0} MiB)";
        return line;
    }
}
