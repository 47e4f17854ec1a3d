using System.Diagnostics;
using QLoraNet.Kernels;
using QLoraNet.Kernels.Cuda;
using QLoraNet.Quant.Kernels;

namespace QLoraNet.Cli;

/// <summary>
/// `bench train --profile`: where the device time of real training steps goes, by phase. The step
/// (<see cref="QLoraNet.Training.Trainer.TrainStep"/>) and its checkpointed layers mark their phase boundaries
/// (<see cref="IStepPhaseMarker"/>); at each mark a CUDA event is recorded on stream 0 (libtorch's and our kernels'
/// stream) and the host clock read. After a step the events give the device time of each phase (from entering it to
/// the next mark: the GPU's time including any wait for the host within it), the host clock gives the time the host
/// spent issuing it; a phase whose host time reaches its device time is host-bound, its GPU idle part unknown from
/// events alone (`nsys`, in scripts/gpu/bench_speed.sh, measures idle time and launches). The gap between one step's
/// end and the next step's start on the device is reported as between-steps time.
/// With the caching allocator's counters, each phase's allocated peak is kept too (the peak since the previous mark,
/// read and reset at each mark): the allocator books an allocation and a free when the host issues them, so these
/// are the peaks of the device memory the phases hold, whatever the GPU's lag. Which phase peaks says where memory
/// could be traded for time (a kept layer's activations are held through the forward and the loss).
/// </summary>
internal sealed class StepProfiler(CudaAllocatorStats? allocator = null) : IStepPhaseMarker, IDisposable
{
    readonly object _gate = new();
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly List<(StepPhase Phase, CudaDriver.Event Event, double HostMs)> _marks = [];
    readonly Queue<List<(StepPhase Phase, CudaDriver.Event Event, double HostMs)>> _closed = new();
    readonly Dictionary<StepPhase, (double Device, double Host)> _totals = new();
    CudaDriver.Event? _lastDone;
    double _betweenMs, _stepDeviceMs, _stepHostMs;
    int _steps, _recomputes, _betweenCount, _lostMarks;
    readonly Dictionary<StepPhase, long> _allocatedPeaks = new();
    StepPhase? _allocatorPhase;   // the phase the allocator's current peak belongs to

    public void Enter(StepPhase phase)
    {
        if (allocator is not null)
            lock (_gate)
            {
                if (_allocatorPhase is { } ended)
                    _allocatedPeaks[ended] = Math.Max(_allocatedPeaks.GetValueOrDefault(ended), allocator.Read().AllocatedPeak);
                allocator.ResetPeak();
                _allocatorPhase = phase;
            }
        CudaDriver.Event? e = null;
        try
        {
            e = new CudaDriver.Event();
            e.Record();
        }
        catch (InvalidOperationException)
        {
            // A thread without the device's context current (not expected: libtorch's autograd thread sets it): the
            // mark is lost and counted, rather than failing the step it measures.
            e?.Dispose();
            Interlocked.Increment(ref _lostMarks);
            return;
        }
        lock (_gate) _marks.Add((phase, e, _clock.Elapsed.TotalMilliseconds));
    }

    /// <summary>Closes the step whose marks were just made, and accounts every closed step but the newest
    /// <paramref name="leaveInFlight"/> (waiting for each one's last event): the train step's outcome is read one
    /// step late, so the profiler must not wait for the step just launched either.</summary>
    public void EndStep(int leaveInFlight = 0)
    {
        lock (_gate)
        {
            if (_marks.Count < 2) throw new InvalidOperationException("the step marked no phases");
            _closed.Enqueue([.. _marks]);
            _marks.Clear();
        }
        while (_closed.Count > leaveInFlight) Account(_closed.Dequeue());
    }

    /// <summary>Accounts the steps still left in flight by <see cref="EndStep"/>.</summary>
    public void Flush()
    {
        while (_closed.Count > 0) Account(_closed.Dequeue());
    }

    void Account(List<(StepPhase Phase, CudaDriver.Event Event, double HostMs)> marks)
    {
        if (_lastDone is not null)
        {
            _betweenMs += marks[0].Event.MillisecondsSince(_lastDone);
            _betweenCount++;
        }
        for (int i = 0; i + 1 < marks.Count; i++)
        {
            double device = marks[i + 1].Event.MillisecondsSince(marks[i].Event), host = marks[i + 1].HostMs - marks[i].HostMs;
            var t = _totals.GetValueOrDefault(marks[i].Phase);
            _totals[marks[i].Phase] = (t.Device + device, t.Host + host);
            if (marks[i].Phase == StepPhase.Recompute) _recomputes++;
        }
        _stepDeviceMs += marks[^1].Event.MillisecondsSince(marks[0].Event);
        _stepHostMs += marks[^1].HostMs - marks[0].HostMs;
        _steps++;
        _lastDone?.Dispose();
        _lastDone = marks[^1].Event;
        foreach (var m in marks.Take(marks.Count - 1)) m.Event.Dispose();
    }

    /// <summary>Per-step means: device and host milliseconds per phase, the step, the gap between steps.</summary>
    public Dictionary<string, object?> Summary()
    {
        double Per(double v) => Math.Round(v / Math.Max(1, _steps), 2);
        var phases = new Dictionary<string, object?>();
        foreach (var phase in new[] { StepPhase.Forward, StepPhase.Recompute, StepPhase.Backward, StepPhase.Optimizer })
        {
            var t = _totals.GetValueOrDefault(phase);
            var row = new Dictionary<string, object?> { ["device_ms"] = Per(t.Device), ["host_ms"] = Per(t.Host) };
            if (_allocatedPeaks.TryGetValue(phase, out long peak)) row["allocated_peak_gib"] = Math.Round(peak / Math.Pow(2, 30), 3);
            phases[phase.ToString().ToLowerInvariant()] = row;
        }
        return new()
        {
            ["profiled_steps"] = _steps, ["phases"] = phases,
            ["step_device_ms"] = Per(_stepDeviceMs), ["step_host_ms"] = Per(_stepHostMs),
            ["between_steps_device_ms"] = _betweenCount == 0 ? null : Math.Round(_betweenMs / _betweenCount, 2),
            ["recomputed_layers_per_step"] = Per(_recomputes), ["lost_marks"] = _lostMarks,
        };
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var m in _marks.Concat(_closed.SelectMany(c => c))) m.Event.Dispose();
            _marks.Clear();
            _closed.Clear();
        }
        _lastDone?.Dispose();
    }
}
