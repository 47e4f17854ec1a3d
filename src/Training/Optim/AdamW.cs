using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Optim;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter 2019, "Decoupled Weight Decay Regularization"), with the exact update order of
/// torch.optim.AdamW (foreach=False): decay p by lr*wd, then m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2,
/// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
/// Ours rather than TorchSharp's so that its whole state (step and the two moments per parameter) is plain named
/// tensors: a checkpoint stores them in safetensors and a resumed run continues bit for bit. The moments are kept
/// in fp32 whatever the parameter dtype (LoRA parameters are fp32 already).
/// The update itself is <see cref="MultiTensorAdamW"/>: on CUDA one kernel launch for every parameter of the step
/// (Cuda/adamw.cu, bit for bit torch's arithmetic), elsewhere the per-tensor torch-op loop of those formulas
/// (<see cref="MultiTensorAdamW.ReferenceStep"/>). Either way the state is the same tensors, so checkpoints do not
/// depend on the path. The moments live on the parameters' device, or with <c>momentsOnHost</c>
/// (training.optimizer_on_host) in host memory, paged through a small device window for each update
/// (<see cref="HostMoments"/>: the same update, the same bits, 2 x 4 bytes per parameter off the device). Dispose the
/// optimizer when its run ends (a host that trains more than once would otherwise hold them until the finalizers run).
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly IReadOnlyList<(string Name, Tensor Param)> _params;
    readonly Dictionary<string, (Tensor M, Tensor V)> _state = new();
    readonly MultiTensorAdamW _update;
    readonly HostMoments? _host;
    bool _disposed;

    public double LearningRate { get; set; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    public long Step { get; private set; }

    /// <param name="kernel">the fused AdamW of the run's kernel selection (<see cref="FusedKernels.AdamW"/>); null = the torch-op loop.</param>
    /// <param name="momentsOnHost">keep the moments in host memory (training.optimizer_on_host; <see cref="HostMoments"/>).</param>
    /// <param name="hostWindowElements">values per moment the device window of <paramref name="momentsOnHost"/> holds.</param>
    public AdamW(IEnumerable<(string Name, Tensor Param)> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weightDecay = 0.0, FusedAdamW? kernel = null, bool momentsOnHost = false,
        long hostWindowElements = HostMoments.DefaultWindowElements)
    {
        _params = parameters.ToList();
        kernel ??= FusedKernels.Reference().AdamW;
        _update = new MultiTensorAdamW(kernel);
        _host = momentsOnHost ? new HostMoments(kernel, hostWindowElements) : null;
        LearningRate = lr;
        Beta1 = beta1;
        Beta2 = beta2;
        Eps = eps;
        WeightDecay = weightDecay;
    }

    /// <summary>The path the last <see cref="StepOnce"/> took (cuda-ptx: one launch, or one per group of the host
    /// moments' window; torch-ops: the loop).</summary>
    public FusedPath LastPath => _host?.LastPath ?? _update.LastPath;

    /// <summary>Whether the moments live in host memory (training.optimizer_on_host).</summary>
    public bool MomentsOnHost => _host is not null;

    /// <summary>With the moments on the host: the device window's bytes and the last update's groups; else (0, 0).</summary>
    public (long WindowBytes, int Groups) HostWindow => _host is null ? (0, 0) : (_host.WindowBytes, _host.Groups);

    /// <summary>One update from the gradients currently in each parameter's .grad (parameters without a gradient are
    /// skipped), counted in <see cref="Step"/> unless it was skipped. With a <paramref name="guard"/> (the train
    /// step's loss sums and gradient norm, on the device) the update is skipped when any of them is not finite and
    /// the gradients are clipped to its norm: on the host path that is decided here; on the kernel's it is decided on
    /// the device and the step counts provisionally: the caller, once it has read the guard's values, calls
    /// <see cref="Retract"/> if they were not finite.</summary>
    public MultiTensorAdamW.Result StepOnce(MultiTensorAdamW.Guard? guard = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Step++;
        var slots = new List<MultiTensorAdamW.Slot>(_params.Count);
        foreach (var (name, p) in _params)
        {
            var g = p.grad;
            if (g is null) continue;
            if (!_state.TryGetValue(name, out var s))
            {
                s = _host is not null
                    ? (HostMoments.Zeros(p).DetachFromDisposeScope(), HostMoments.Zeros(p).DetachFromDisposeScope())
                    : (torch.zeros_like(p, dtype: ScalarType.Float32).DetachFromDisposeScope(),
                       torch.zeros_like(p, dtype: ScalarType.Float32).DetachFromDisposeScope());
                _state[name] = s;
            }
            slots.Add(new MultiTensorAdamW.Slot(p, g, s.M, s.V));
        }
        var hyper = new MultiTensorAdamW.Hyper(LearningRate, Beta1, Beta2, Eps, WeightDecay, Step);
        var result = _host is not null ? _host.Step(slots, hyper, guard) : _update.Step(slots, hyper, guard);
        if (result == MultiTensorAdamW.Result.Skipped) Step--;
        return result;
    }

    /// <summary>Uncounts the last step, which the kernel skipped on the device (its guard was not finite): the next
    /// update's bias corrections continue from the step before, as when the host skipped it.</summary>
    public void Retract()
    {
        if (Step == 0) throw new InvalidOperationException("no step to retract");
        Step--;
    }

    public void ZeroGrad()
    {
        foreach (var (_, p) in _params)
        {
            var g = p.grad;
            if (g is null) continue;
            g.zero_();
        }
    }

    /// <summary>State as named CPU tensors ("{param}.exp_avg", "{param}.exp_avg_sq") plus the step, for a checkpoint.</summary>
    public (Dictionary<string, Tensor> Tensors, long Step) Save()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        // Host moments are written by copies queued on the device's stream: wait for the last update's to land.
        if (_host is not null && _params.Count > 0 && _params[0].Param.device_type == DeviceType.CUDA)
            torch.cuda.synchronize(_params[0].Param.device);
        var d = new Dictionary<string, Tensor>();
        foreach (var (name, (m, v)) in _state)
        {
            d[name + ".exp_avg"] = m.detach().cpu().clone();
            d[name + ".exp_avg_sq"] = v.detach().cpu().clone();
        }
        return (d, Step);
    }

    public void Load(IReadOnlyDictionary<string, Tensor> tensors, long step)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Step = step;
        foreach (var (name, p) in _params)
        {
            if (!tensors.TryGetValue(name + ".exp_avg", out var m) || !tensors.TryGetValue(name + ".exp_avg_sq", out var v))
            {
                if (step > 0) throw new InvalidDataException($"optimizer state has no moments for parameter '{name}'");
                continue;
            }
            if (!m.shape.SequenceEqual(p.shape)) throw new InvalidDataException($"optimizer state for '{name}' has shape [{string.Join(", ", m.shape)}], parameter is [{string.Join(", ", p.shape)}]");
            if (_state.TryGetValue(name, out var old)) { old.M.Dispose(); old.V.Dispose(); }
            _state[name] = _host is not null
                ? (HostMoments.ToHost(m, p).DetachFromDisposeScope(), HostMoments.ToHost(v, p).DetachFromDisposeScope())
                : (m.to(ScalarType.Float32, p.device).clone().DetachFromDisposeScope(), v.to(ScalarType.Float32, p.device).clone().DetachFromDisposeScope());
        }
    }

    /// <summary>Releases the moments (the parameters and their gradients are the caller's).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (m, v) in _state.Values)
        {
            m.Dispose();
            v.Dispose();
        }
        _state.Clear();
        _host?.Dispose();
        _update.Dispose();
    }
}
