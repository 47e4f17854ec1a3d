using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Optim;

/// <summary>
/// AdamW's two moments kept in host memory (training.optimizer_on_host): pinned when the parameters are on a GPU,
/// paged through one small device window for each update. The moments are two fp32 values per trainable parameter,
/// twice the parameters' own memory, and are read once per optimizer step; on the device they are dead weight for the
/// whole forward and backward, where the step's peak is. Here the update runs in groups of parameters whose moments
/// fit the window: each group's moments are copied in, updated by the same <see cref="MultiTensorAdamW"/> as on the
/// device (the same kernel and arithmetic, so the same bits), and copied back, all queued in order on the stream the
/// update runs on. This is the idea of ZeRO-Offload's optimizer offload (Ren et al. 2021) and of the QLoRA paper's
/// paged optimizers (Dettmers et al. 2023, section 3: optimizer state evicted to CPU RAM under memory pressure), for
/// the update alone: the arithmetic stays on the GPU, only the state's residence moves. Costs per step: the moments
/// cross PCIe twice (16 bytes per parameter), and one launch per group.
/// Owns the window (and one update per group, each keeping its kernel's pointer table across steps); the host
/// moments are <see cref="AdamW"/>'s.
/// </summary>
public sealed class HostMoments : IDisposable
{
    /// <summary>Default window: 2^20 values per moment (4 MiB each): a 7B model's q/k/v/o adapters at r=16 (16.8M
    /// parameters, 128 MiB of moments) page through it in 16 groups.</summary>
    public const long DefaultWindowElements = 1L << 20;

    readonly FusedAdamW _kernel;
    readonly long _budget;
    readonly List<MultiTensorAdamW> _updates = new();
    Tensor? _window;   // (2 * capacity) fp32 on the parameters' device: exp_avg values, then exp_avg_sq values
    long _capacity;

    public HostMoments(FusedAdamW kernel, long windowElements = DefaultWindowElements)
    {
        if (windowElements < 1) throw new ArgumentOutOfRangeException(nameof(windowElements), windowElements, "must be at least 1");
        _kernel = kernel;
        _budget = windowElements;
    }

    /// <summary>Groups of the update (the last <see cref="Step"/>'s).</summary>
    public int Groups { get; private set; }

    /// <summary>The path the last <see cref="Step"/> took (each group takes the same one).</summary>
    public FusedPath LastPath => _updates.Count > 0 ? _updates[0].LastPath : FusedPath.TorchOps;

    /// <summary>Device memory of the window, in bytes (0 before the first step).</summary>
    public long WindowBytes => _window is null ? 0 : _window.numel() * 4;

    /// <summary>New zero moments for <paramref name="param"/> in host memory (pinned for a CUDA parameter, so that
    /// the copies queue without the host waiting).</summary>
    public static Tensor Zeros(Tensor param)
    {
        var t = torch.zeros(param.shape, ScalarType.Float32, torch.CPU);
        return param.device_type == DeviceType.CUDA ? Pin(t) : t;
    }

    /// <summary><paramref name="moment"/> as this optimizer keeps it: an fp32 copy in host memory, pinned for a CUDA parameter.</summary>
    public static Tensor ToHost(Tensor moment, Tensor param)
    {
        var t = moment.to(ScalarType.Float32, torch.CPU).clone();
        return param.device_type == DeviceType.CUDA ? Pin(t) : t;
    }

    static Tensor Pin(Tensor t)
    {
        var pinned = t.pin_memory();
        t.Dispose();
        return pinned;
    }

    /// <summary>One update of every slot, whose moments are in host memory: group by group through the window. The
    /// guard (if any) is the same for every group, so a skip decided on the host skips the first group and therefore
    /// all; one decided on the device is decided alike by each group's launch.</summary>
    public MultiTensorAdamW.Result Step(IReadOnlyList<MultiTensorAdamW.Slot> slots, MultiTensorAdamW.Hyper h, MultiTensorAdamW.Guard? guard)
    {
        if (slots.Count == 0) return MultiTensorAdamW.Result.Applied;
        EnsureWindow(slots);
        var result = MultiTensorAdamW.Result.Applied;
        int group = 0, start = 0;
        while (start < slots.Count)
        {
            int end = start;
            long used = 0;
            while (end < slots.Count && (end == start || used + slots[end].Param.numel() <= _capacity))
                used += slots[end++].Param.numel();
            using var scope = torch.NewDisposeScope();
            var paged = new MultiTensorAdamW.Slot[end - start];
            long offset = 0;
            for (int i = start; i < end; i++)
            {
                var s = slots[i];
                long n = s.Param.numel();
                // (numel) views of the window, shaped as the parameter: this group's moments on the device
                var m = _window!.narrow(0, offset, n).view(s.Param.shape);
                var v = _window.narrow(0, _capacity + offset, n).view(s.Param.shape);
                m.copy_(s.ExpAvg, true);
                v.copy_(s.ExpAvgSq, true);
                paged[i - start] = s with { ExpAvg = m, ExpAvgSq = v };
                offset += n;
            }
            if (_updates.Count <= group) _updates.Add(new MultiTensorAdamW(_kernel));
            var r = _updates[group].Step(paged, h, guard);
            if (r == MultiTensorAdamW.Result.Skipped) return r;   // seen on the host before any group was updated
            for (int i = start; i < end; i++)
            {
                slots[i].ExpAvg.copy_(paged[i - start].ExpAvg, true);
                slots[i].ExpAvgSq.copy_(paged[i - start].ExpAvgSq, true);
            }
            result = r;
            group++;
            start = end;
        }
        Groups = group;
        return result;
    }

    /// <summary>Values per moment the window holds for parameters whose largest has <paramref name="largestNumel"/>
    /// values: the budget, or that parameter if larger (a group holds whole parameters).</summary>
    public static long Capacity(long largestNumel, long windowElements = DefaultWindowElements) => Math.Max(windowElements, largestNumel);

    void EnsureWindow(IReadOnlyList<MultiTensorAdamW.Slot> slots)
    {
        long need = Capacity(slots.Max(s => s.Param.numel()), _budget);
        var p = slots[0].Param;
        if (_window is not null && _capacity >= need && _window.device_type == p.device_type && _window.device_index == p.device_index) return;
        _window?.Dispose();
        _capacity = need;
        _window = torch.empty(2 * need, ScalarType.Float32, p.device).DetachFromDisposeScope();
    }

    public void Dispose()
    {
        _window?.Dispose();
        _window = null;
        foreach (var u in _updates) u.Dispose();
        _updates.Clear();
    }
}
