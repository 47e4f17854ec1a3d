using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Kernels;

/// <summary>
/// One chunk of the training loss's cross-entropy, loss and gradient in one CUDA kernel (Cuda/cross_entropy.cu): the
/// chunk's logits stay in the compute dtype and are overwritten by the gradient of the chunk's summed loss, so no
/// (tokens, vocab) fp32 tensor is made. The torch-op way casts the logits to fp32, keeps their log-softmax for
/// backward and makes an fp32 gradient before casting it back: ~18 bytes a logit against 2 here, which for a 16M-logit
/// chunk is ~300 MiB less while the loss runs (on a 7B Llama at 512 x 4 with kept layers the step's peak is elsewhere,
/// in the last kept layer's MLP: docs/BENCHMARKS.md, session 33). Same arithmetic as <see cref="Reference"/> (fp32
/// from the same inputs, the gradient rounded once to the logits' dtype) up to summation order and the last bits of
/// e^x and ln (cross_entropy.cu states the bound; `bench kernel` measures it on the device). The reference runs
/// wherever the kernel cannot: CPU, fp16, a vocabulary not a multiple of 8, or an instance made without the kernel
/// (<see cref="FusedKernels"/> decides).
/// </summary>
public sealed unsafe class FusedCrossEntropy : FusedOp
{
    internal const string PtxFile = "cross_entropy.ptx";
    const int Threads = 256; // kThreads in cross_entropy.cu

    internal FusedCrossEntropy(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames => ["qln_cross_entropy_bf16", "qln_cross_entropy_f32"];

    /// <summary>
    /// The summed cross-entropy's per-row losses, with <paramref name="logits"/> overwritten by the gradient of their
    /// sum (softmax - one-hot of the target; zero on an ignored row), in its own dtype.
    /// </summary>
    /// <param name="logits">(rows, vocab) in the compute dtype, no graph (a detached view of the head's output):
    /// overwritten.</param>
    /// <param name="targets">(rows) int64 class per row, or <paramref name="ignoreIndex"/>.</param>
    /// <returns>(rows) fp32: lse - logit[target], 0 on an ignored row (NaN on the kernel's path for a target outside
    /// the vocabulary, where the reference throws).</returns>
    public Tensor LossAndGradientInPlace(Tensor logits, Tensor targets, long ignoreIndex)
    {
        if (logits.dim() != 2 || targets.dim() != 1 || targets.shape[0] != logits.shape[0])
            throw new ArgumentException($"cross-entropy: logits (rows, vocab) and targets (rows) expected, got [{string.Join(", ", logits.shape)}] and [{string.Join(", ", targets.shape)}]");
        if (logits.requires_grad)
            throw new ArgumentException("cross-entropy: the logits are overwritten, so they must hold no graph (pass a detached view)");
        if (KernelFits(logits, targets) && Kernel(logits, targets, ignoreIndex) is { } loss)
        {
            CountKernel();
            return loss;
        }
        CountReference();
        return Reference(logits, targets, ignoreIndex);
    }

    /// <summary>The torch ops the kernel stands for: fp32 logits, F.cross_entropy summed, autograd's gradient (the
    /// cast's backward rounds it to the logits' dtype), written over the logits.</summary>
    public static Tensor Reference(Tensor logits, Tensor targets, long ignoreIndex)
    {
        using var scope = NewDisposeScope();
        using var enableGrad = torch.enable_grad();
        var x = logits.detach().requires_grad_(true);
        var wide = x.dtype == ScalarType.Float64 ? x : x.to(ScalarType.Float32);
        var perRow = F.cross_entropy(wide, targets, ignore_index: ignoreIndex, reduction: nn.Reduction.None);   // (rows)
        var gradient = torch.autograd.grad([perRow.sum()], [x])[0];
        using (torch.no_grad()) logits.copy_(gradient);
        return perRow.detach().MoveToOuterDisposeScope();
    }

    bool KernelFits(Tensor logits, Tensor targets) =>
        Module is not null && logits.device_type == DeviceType.CUDA && DeviceTensors.IsKernelDType(logits.dtype)
        && logits.is_contiguous() && logits.shape[1] % 8 == 0 && logits.shape[1] <= int.MaxValue
        && logits.shape[0] is > 0 and <= int.MaxValue && targets.dtype == ScalarType.Int64
        && DeviceTensors.OnOneCudaDevice(logits, targets);

    Tensor? Kernel(Tensor logits, Tensor targets, long ignoreIndex)
    {
        using var scope = NewDisposeScope();
        if (!DeviceTensors.Aligned16(logits)) return null;
        var t = targets.contiguous();
        var loss = empty(logits.shape[0], ScalarType.Float32, logits.device);           // (rows)
        IntPtr pl = DeviceTensors.Ptr(logits), pt = DeviceTensors.Ptr(t), po = DeviceTensors.Ptr(loss);
        int vocab = (int)logits.shape[1];
        long ignore = ignoreIndex;
        void** args = stackalloc void*[] { &pl, &pt, &po, &vocab, &ignore };
        Launch(logits.dtype == ScalarType.BFloat16 ? "qln_cross_entropy_bf16" : "qln_cross_entropy_f32",
            (uint)logits.shape[0], 1, Threads, args);
        return loss.MoveToOuterDisposeScope();
    }
}
