using System.Diagnostics;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// Timing of GPU work for `bench kernel`, two ways:
/// <list type="bullet">
/// <item>device time: CUDA events around <c>iters</c> calls, recorded after a prefix of large copies long enough
/// that the host has queued every call before the GPU reaches them, so launch and TorchSharp overhead stay out and
/// the GPU runs the calls back to back (the median of three such measurements);</item>
/// <item>host time: wall clock per call with a synchronisation at the end only, i.e. the larger of the host's
/// cost of issuing a call and the device's cost of running it.</item>
/// </list>
/// Also the ceiling the memory-bound kernels are held to: device-to-device copy bandwidth, bytes read plus
/// written, measured the same way. On the CPU (`bench kernel --smoke`) both times are the wall clock.
/// </summary>
internal sealed class CudaTiming : IDisposable
{
    readonly Tensor _src, _dst; // 512 MiB each on CUDA: the busy prefix and the copy-bandwidth measurement
    readonly double _copyMs;
    readonly bool _cuda;

    public CudaTiming(Device device)
    {
        _cuda = device.type == DeviceType.CUDA;
        _src = empty(new long[] { _cuda ? 1L << 28 : 1L << 20 }, ScalarType.Float16, device).uniform_(-1, 1);
        _dst = empty_like(_src);
        _dst.copy_(_src);
        Synchronize();
        _copyMs = _cuda ? Device(() => _dst.copy_(_src), 10, busyMs: 1.0) / 1000 : Time(() => _dst.copy_(_src), 10).Host / 1000;
    }

    void Synchronize()
    {
        if (_cuda) cuda.synchronize();
    }

    /// <summary>Device-to-device copy, GB/s counting bytes read plus written.</summary>
    public double CopyGbs => 2.0 * _src.numel() * _src.element_size() / (_copyMs * 1e6);

    /// <summary>(device microseconds per call, host microseconds per call) after three warm-up calls.</summary>
    public (double Device, double Host) Time(Action op, int iters)
    {
        for (int i = 0; i < 3; i++) op();
        Synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iters; i++) op();
        Synchronize();
        double hostUs = sw.Elapsed.TotalMilliseconds * 1000 / iters;
        if (!_cuda) return (hostUs, hostUs);
        var runs = new double[3];
        for (int r = 0; r < runs.Length; r++) runs[r] = Device(op, iters, busyMs: 1.5 * iters * hostUs / 1000 + 0.5);
        Array.Sort(runs);
        return (runs[1], hostUs);
    }

    double Device(Action op, int iters, double busyMs)
    {
        using var start = new CudaDriver.Event();
        using var end = new CudaDriver.Event();
        cuda.synchronize();
        int copies = _copyMs > 0 ? (int)Math.Ceiling(busyMs / _copyMs) : 4;
        for (int i = 0; i < Math.Min(copies, 400); i++) _dst.copy_(_src);
        start.Record();
        for (int i = 0; i < iters; i++) op();
        end.Record();
        return end.MillisecondsSince(start) * 1000 / iters;
    }

    public void Dispose()
    {
        _src.Dispose();
        _dst.Dispose();
    }
}
