using System.Runtime.InteropServices;
using QLoraNet.Distributed;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// An optimizer step the host has launched and the device may still be running (<see cref="TrainStep.Launch"/>).
/// Its results (the micro-batches' loss sums and the gradient norm) are copied to pinned host memory behind the
/// step's work, and an event marks the copy; <see cref="Outcome"/> waits for that event only, not for the work
/// queued after it. So a caller that launches step s + 1 before reading step s keeps the GPU busy while the host
/// prepares the next step: reading at the end of each step drained the queue and left the GPU idle for the ~3 ms
/// the host then took to issue the next step's first kernels (docs/BENCHMARKS.md, issue 13's profile).
/// The update itself does not wait for the read: the optimizer's kernel skips a non-finite step and clips on the
/// device (<see cref="Kernels.MultiTensorAdamW.Guard"/>). When the device decided, the step counts in the optimizer
/// provisionally, and the first read of a skipped step retracts it (the next launch reads the previous step before
/// its own update, so bias corrections never count a skipped step).
/// On the CPU, or where the event cannot be made, the values are read at once and nothing is in flight.
/// Replicas: <see cref="Outcome"/> sums the loss over replicas (a collective), so every replica reads every
/// step's outcome, in step order.
/// </summary>
public sealed class StepInFlight
{
    readonly int _lossCount;
    readonly double _terms;
    readonly IReplicaGroup _replicas;
    readonly Action? _retractIfSkipped;
    Tensor? _onHost;                  // (lossCount + 1) fp32, pinned when copied from a GPU
    CudaDriver.Event? _copied;        // recorded on stream 0 after the copy; null when _onHost is already filled
    float[]? _values;
    StepOutcome? _outcome;

    /// <param name="stats">(lossCount + 1) fp32: the micro-batches' loss sums, then the global gradient norm.</param>
    /// <param name="terms">the step's loss terms over all replicas (the loss is the replicas' sum over this).</param>
    /// <param name="retractIfSkipped">undoes the optimizer's count of this step, when the device decided whether it stepped.</param>
    internal StepInFlight(int step, Tensor stats, int lossCount, double terms, long inputTokens, IReplicaGroup replicas, Action? retractIfSkipped)
    {
        Step = step;
        InputTokens = inputTokens;
        _lossCount = lossCount;
        _terms = terms;
        _replicas = replicas;
        _retractIfSkipped = retractIfSkipped;
        if (stats.device_type == DeviceType.CUDA && TryCopyBehind(stats)) return;
        _values = Read(stats);
        if (Skipped(_values)) _retractIfSkipped?.Invoke();
    }

    /// <summary>The step's index (0-based), as launched.</summary>
    public int Step { get; }

    /// <summary>Input tokens of the step over all replicas (known at launch, from the host-side batches).</summary>
    public long InputTokens { get; }

    /// <summary>The step's outcome: waits for its results (not for later work), sums the loss over replicas once.</summary>
    public StepOutcome Outcome
    {
        get
        {
            if (_outcome is { } known) return known;
            var values = Settle();
            double loss = _replicas.Sum(PairwiseOrder.Sum(values.Take(_lossCount).Select(v => (double)v).ToArray())) / _terms;
            _outcome = new StepOutcome(loss, values[_lossCount], InputTokens, (long)_terms) { Applied = !Skipped(values) };
            return _outcome;
        }
    }

    /// <summary>This replica's values on the host; the first call retracts the optimizer's count of a skipped step.</summary>
    internal float[] Settle()
    {
        if (_values is not null) return _values;
        _copied!.Synchronize();
        _values = _onHost!.data<float>().ToArray();
        _copied.Dispose();
        _onHost.Dispose();
        (_copied, _onHost) = (null, null);
        if (Skipped(_values)) _retractIfSkipped?.Invoke();
        return _values;
    }

    /// <summary>Whether the optimizer's guard skipped the step these values decided.</summary>
    static bool Skipped(float[] values) => Kernels.MultiTensorAdamW.Skips(values);

    bool TryCopyBehind(Tensor stats)
    {
        try
        {
            using (var plain = torch.empty(stats.shape, ScalarType.Float32))
                _onHost = plain.pin_memory().DetachFromDisposeScope();
            _onHost.copy_(stats, true);       // non-blocking: queued behind the step's work
            _copied = new CudaDriver.Event(timing: false);
            _copied.Record();
            return true;
        }
        catch (Exception e) when (e is InvalidOperationException or DllNotFoundException or EntryPointNotFoundException or ExternalException)
        {
            // No driver API here (the context or libcuda not reachable): read now, as every step did before.
            _copied?.Dispose();
            _onHost?.Dispose();
            (_copied, _onHost) = (null, null);
            return false;
        }
    }

    static float[] Read(Tensor stats)
    {
        using var onHost = stats.cpu();
        return onHost.data<float>().ToArray();
    }
}
