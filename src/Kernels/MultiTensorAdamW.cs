using System.Runtime.InteropServices;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// One AdamW step (Loshchilov &amp; Hutter 2019) over all adapter parameters in a single CUDA launch
/// (Cuda/adamw.cu), where the per-tensor torch ops of QLoraNet's AdamW cost ~11 launches per parameter tensor
/// (~2800 for a 7B model with LoRA on q/k/v/o). Same update as <see cref="ReferenceStep"/>, the torch-op loop of
/// Training's AdamW, which runs wherever the kernel cannot (CPU, non-fp32 or non-contiguous tensors, or a
/// <see cref="FusedAdamW"/> made without the kernel). The instance keeps the kernel's device-side pointer table
/// between steps (parameters, gradients and moments keep their storage, so it is built once) and owns nothing else:
/// one per optimizer.
/// </summary>
public sealed unsafe class MultiTensorAdamW : IDisposable
{
    const int Chunk = 256 * 16; // kChunk in adamw.cu
    readonly FusedAdamW _kernel;

    /// <summary>One parameter with its gradient and fp32 moments (exp_avg, exp_avg_sq), all the same shape.</summary>
    public readonly record struct Slot(Tensor Param, Tensor Grad, Tensor ExpAvg, Tensor ExpAvgSq);

    /// <summary>The step's hyper-parameters; <paramref name="Step"/> counts from 1 (bias corrections 1 - beta^step).</summary>
    public readonly record struct Hyper(double LearningRate, double Beta1, double Beta2, double Eps, double WeightDecay, long Step);

    /// <summary>
    /// What a training step decides from its own results, as values still on the device: <paramref name="Stats"/>
    /// (n) fp32 holds the step's loss sums and, last, its global gradient norm. If any is not finite the update does
    /// not happen; otherwise the gradients are clipped to <paramref name="MaxNorm"/> (0 or infinity: not clipped)
    /// with <see cref="ClipCoefficient"/>. The kernel reads them where they are, so the host need not wait for the
    /// step to finish before it launches the update (adamw.cu); the reference reads them on the host.
    /// </summary>
    public readonly record struct Guard(Tensor Stats, double MaxNorm);

    /// <summary>What <see cref="Step"/> did: updated, skipped (a non-finite guard, seen on the host), or left the
    /// decision to the kernel on the device (the caller learns it when it reads the guard's values).</summary>
    public enum Result { Applied, Skipped, DecidedOnDevice }

    Tensor? _table;            // (count * 6) int64 on the device: adamw.cu's AdamWTensor records
    long[]? _tableHost;        // what _table holds, to see when pointers change
    long _blocks;

    /// <param name="kernel">the loaded kernel (<see cref="FusedKernels.AdamW"/>), or one without it (the reference runs).</param>
    public MultiTensorAdamW(FusedAdamW kernel) => _kernel = kernel;

    /// <summary>adamw.cu's `flags` (0 = torch's CUDA arithmetic; see its header); for `bench kernel` only.</summary>
    internal int Flags { get; init; }

    /// <summary>The path the last <see cref="Step"/> took.</summary>
    public FusedPath LastPath { get; private set; } = FusedPath.TorchOps;

    /// <summary>One update of every slot, in place: one kernel launch when all are fp32 contiguous CUDA tensors.</summary>
    public Result Step(IReadOnlyList<Slot> slots, Hyper h, Guard? guard = null)
    {
        if (slots.Count == 0) return Result.Applied;
        if (guard is { } g && (g.Stats.dtype != ScalarType.Float32 || g.Stats.dim() != 1 || g.Stats.numel() < 1))
            throw new ArgumentException($"the guard's stats must be a 1-D fp32 tensor of loss sums and the norm, got {g.Stats.dtype} [{string.Join(", ", g.Stats.shape)}]");
        if (_kernel.Path == FusedPath.CudaPtx && slots[0].Param.device_type == DeviceType.CUDA
            && (guard is not { } onDevice || (onDevice.Stats.device_type == DeviceType.CUDA && onDevice.Stats.device_index == slots[0].Param.device_index
                && onDevice.Stats.is_contiguous())))
        {
            var host = HostTable(slots, out long blocks);
            // The same addresses and sizes as the table already on the device: those tensors passed KernelFits when
            // it was built (a training run's gradients keep their storage: Training's FlatGradients), so the ~20
            // native queries per slot and the table's copy to the device are skipped.
            bool same = _table is not null && _tableHost is not null && _tableHost.AsSpan().SequenceEqual(host)
                && _table.device_index == slots[0].Param.device_index;
            if ((same || KernelFits(slots)) && Launch(slots[0].Param.device, host, blocks, same, h, guard))
            {
                LastPath = FusedPath.CudaPtx;
                _kernel.Counted(kernel: true);
                return guard is null ? Result.Applied : Result.DecidedOnDevice;
            }
        }
        LastPath = FusedPath.TorchOps;
        _kernel.Counted(kernel: false);
        float clip = 1f;
        if (guard is { } check)
        {
            float[] stats;
            using (var onHost = check.Stats.cpu()) stats = onHost.data<float>().ToArray();
            if (Skips(stats)) return Result.Skipped;
            clip = ClipCoefficient(stats[^1], check.MaxNorm);
        }
        ReferenceStep(slots, h, clip);
        return Result.Applied;
    }

    /// <summary>The guard's test, as adamw.cu makes it: any loss sum or the norm not finite = no update.</summary>
    public static bool Skips(IEnumerable<float> stats) => !stats.All(float.IsFinite);

    /// <summary>torch.nn.utils.clip_grad_norm_'s coefficient for gradients of global norm <paramref name="norm"/>:
    /// maxNorm / (norm + 1e-6) when below 1, else 1 (maxNorm 0 or infinity: 1). In fp32 with round-to-nearest at
    /// each operation, as adamw.cu computes it, so both paths clip alike.</summary>
    public static float ClipCoefficient(float norm, double maxNorm)
    {
        if (!(maxNorm > 0)) return 1f;
        float c = (float)maxNorm / (norm + 1e-6f);
        return c < 1f ? c : 1f;
    }

    /// <summary>AdamW.cs's update, tensor by tensor, in torch ops (the reference, and the CPU path); each gradient
    /// times <paramref name="clip"/> first when it is not 1 (adamw.cu's guard).</summary>
    public static void ReferenceStep(IReadOnlyList<Slot> slots, Hyper h, float clip = 1f)
    {
        using var _ = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        double bc1 = 1 - Math.Pow(h.Beta1, h.Step);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(h.Beta2, h.Step));
        double stepSize = h.LearningRate / bc1;
        foreach (var (p, g, m, v) in slots)
        {
            var g32 = g.to(ScalarType.Float32);
            if (clip != 1f) g32 = g32.mul(clip);   // not in place: g32 may be the gradient itself
            if (h.WeightDecay != 0) p.mul_(1 - h.LearningRate * h.WeightDecay);
            m.mul_(h.Beta1).add_(g32, alpha: 1 - h.Beta1);
            v.mul_(h.Beta2).addcmul_(g32, g32, value: 1 - h.Beta2);
            var denom = v.sqrt().div_(bc2Sqrt).add_(h.Eps);
            var update = m.div(denom).mul_(stepSize);
            p.sub_(update.to(p.dtype));
        }
    }

    bool KernelFits(IReadOnlyList<Slot> slots)
    {
        if (_kernel.Path != FusedPath.CudaPtx || slots[0].Param.device_type != DeviceType.CUDA) return false;
        foreach (var (p, g, m, v) in slots)
        {
            foreach (var t in new[] { p, g, m, v })
                if (t.dtype != ScalarType.Float32 || !t.is_contiguous() || t.device_type != DeviceType.CUDA
                    || t.device_index != p.device_index || t.numel() != p.numel())
                    return false;
        }
        return DeviceTensors.OnOneCudaDevice(slots.Select(s => s.Param).ToArray());
    }

    /// <summary>adamw.cu's AdamWTensor records (param, grad, exp_avg, exp_avg_sq pointers, numel, first block) and
    /// the launch's block count.</summary>
    static long[] HostTable(IReadOnlyList<Slot> slots, out long blocks)
    {
        var host = new long[slots.Count * 6];
        blocks = 0;
        for (int i = 0; i < slots.Count; i++)
        {
            var (p, g, m, v) = slots[i];
            long n = p.numel();
            host[6 * i] = DeviceTensors.Ptr(p); host[6 * i + 1] = DeviceTensors.Ptr(g);
            host[6 * i + 2] = DeviceTensors.Ptr(m); host[6 * i + 3] = DeviceTensors.Ptr(v);
            host[6 * i + 4] = n; host[6 * i + 5] = blocks;
            blocks += (n + Chunk - 1) / Chunk;
        }
        return host;
    }

    bool Launch(Device device, long[] host, long blocks, bool sameTable, Hyper h, Guard? guard)
    {
        if (blocks == 0) return true;
        if (blocks > int.MaxValue) return false;
        if (!sameTable)
        {
            _table?.Dispose();
            using var cpu = torch.tensor(host, ScalarType.Int64);
            _table = cpu.to(device).DetachFromDisposeScope();
            _tableHost = host;
            _blocks = blocks;
        }
        // The scalars as torch rounds a double Scalar for an fp32 tensor (to fp32, round to nearest).
        double bc1 = 1 - Math.Pow(h.Beta1, h.Step);
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(h.Beta2, h.Step));
        float decay = h.WeightDecay != 0 ? (float)(1 - h.LearningRate * h.WeightDecay) : 1f;
        float b1 = (float)h.Beta1, oneMinusB1 = (float)(1 - h.Beta1), b2 = (float)h.Beta2, oneMinusB2 = (float)(1 - h.Beta2);
        float bc2 = (float)bc2Sqrt, invBc2 = 1f / bc2, eps = (float)h.Eps, stepSize = (float)(h.LearningRate / bc1);
        IntPtr table = DeviceTensors.Ptr(_table!);
        int count = host.Length / 6, flags = Flags;
        IntPtr stats = guard is { } g ? DeviceTensors.Ptr(g.Stats) : IntPtr.Zero;
        int nStats = guard is { } n ? (int)n.Stats.numel() : 0;
        float maxNorm = guard is { } m && m.MaxNorm > 0 ? (float)m.MaxNorm : 0f;   // infinity stays infinity: never clips
        void** args = stackalloc void*[] { &table, &count, &decay, &b1, &oneMinusB1, &b2, &oneMinusB2, &bc2, &invBc2, &eps, &stepSize, &flags,
            &stats, &nStats, &maxNorm };
        _kernel.Launch((uint)_blocks, args);
        return true;
    }

    public void Dispose()
    {
        _table?.Dispose();
        _table = null;
        _tableHost = null;
    }
}
