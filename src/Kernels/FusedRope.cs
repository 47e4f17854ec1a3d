using System.Runtime.InteropServices;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Rotary position embedding of q and k in one CUDA kernel each way (Cuda/rope.cu), reading the (B, heads, T, D)
/// views of the projections in place and writing the rotated tensors in the same layout: one pass instead of the
/// reference's six (two slices, a negation, a concatenation, two multiplies and an add per tensor). Equal bit for bit
/// to <see cref="RopeReference"/>, which runs wherever the kernel cannot (CPU, fp16, odd layouts,
/// QLORANET_DISABLE_CUDA_KERNELS=1). cos/sin are read as given (RotaryEmbedding computes them once per forward).
/// Drop-in: <c>RotaryEmbedding.Apply(x, cos, sin)</c> is <c>FusedRope.Apply(x, cos, sin)</c>, and the pair
/// <c>q = Apply(q, ..); k = Apply(k, ..)</c> is <c>(q, k) = FusedRope.ApplyQk(q, k, cos, sin)</c>.
/// </summary>
public static unsafe class FusedRope
{
    static readonly PtxModule Ptx = new(typeof(FusedRope).Assembly, "rope.ptx");
    const int Threads = 256; // kThreads in rope.cu

    /// <summary>Why the kernel cannot run here (null when it can).</summary>
    public static string? Unavailable => Ptx.Unavailable;

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames => ["qln_rope_fwd_bf16", "qln_rope_fwd_f32", "qln_rope_bwd_bf16", "qln_rope_bwd_f32"];

    /// <param name="x">(B, heads, T, D), last dimension contiguous.</param>
    /// <param name="cos">(B, T, D) in x's dtype.</param>
    /// <param name="sin">(B, T, D)</param>
    /// <returns>(B, heads, T, D) x rotated.</returns>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin) =>
        KernelFits(x, null, cos, sin) ? RopeFunction.apply(x, null!, cos, sin, true)[0] : RopeReference.Forward(x, cos, sin);

    /// <summary>Both q (B, heads, T, D) and k (B, kvHeads, T, D) in one launch.</summary>
    public static (Tensor Q, Tensor K) ApplyQk(Tensor q, Tensor k, Tensor cos, Tensor sin)
    {
        if (!KernelFits(q, k, cos, sin)) return (RopeReference.Forward(q, cos, sin), RopeReference.Forward(k, cos, sin));
        var outputs = RopeFunction.apply(q, k, cos, sin, true);
        return (outputs[0], outputs[1]);
    }

    /// <summary>The autograd function with the reference forward and backward (CPU tests of its plumbing).</summary>
    internal static (Tensor Q, Tensor K) ApplyQkWithReferenceFunction(Tensor q, Tensor k, Tensor cos, Tensor sin)
    {
        var outputs = RopeFunction.apply(q, k, cos, sin, false);
        return (outputs[0], outputs[1]);
    }

    static bool KernelFits(Tensor x, Tensor? k, Tensor cos, Tensor sin)
    {
        if (x.device_type != DeviceType.CUDA || Unavailable is not null) return false;
        if (!DeviceTensors.IsKernelDType(x.dtype) || cos.dtype != x.dtype || sin.dtype != x.dtype) return false;
        if (!DeviceTensors.OnOneCudaDevice(x, cos, sin) || (k is not null && !DeviceTensors.OnOneCudaDevice(x, k))) return false;
        if (!Fits(x, cos) || (k is not null && (k.dtype != x.dtype || !Fits(k, cos)))) return false;
        return cos.dim() == 3 && sin.dim() == 3 && cos.shape.SequenceEqual(sin.shape) && cos.stride(2) == 1 && sin.stride(2) == 1
            && cos.stride(0) == sin.stride(0) && cos.stride(1) == sin.stride(1) && VectorAligned(cos) && VectorAligned(sin);
    }

    /// <summary>(B, heads, T, D) with D a multiple of 16 and the 8-element groups the kernel moves 16-byte aligned.</summary>
    static bool Fits(Tensor x, Tensor cos)
    {
        if (x.dim() != 4 || x.stride(3) != 1 || x.shape[3] % 16 != 0) return false;
        if (cos.shape[0] != x.shape[0] && cos.shape[0] != 1 || cos.shape[1] != x.shape[2] || cos.shape[2] != x.shape[3]) return false;
        if (x.numel() / 16 >= int.MaxValue) return false; // rope.cu's 32-bit thread index
        return VectorAligned(x);
    }

    static bool VectorAligned(Tensor t)
    {
        long vector = 16 / t.element_size(); // elements per 16 bytes
        for (int d = 0; d < t.dim() - 1; d++)
            if (t.shape[d] > 1 && t.stride(d) % vector != 0) return false;
        return DeviceTensors.Aligned16(t);
    }

    /// <summary>rope.cu's RopeTensor, passed by value: pointers, element strides (b, head, t) in and out, rows, heads.</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct RopeTensor
    {
        public IntPtr In, Out;
        public long InB, InH, InT, OutB, OutH, OutT;
        public long Rows;
        public int Heads, Pad;

        public static RopeTensor Of(Tensor input, Tensor output) => new()
        {
            In = DeviceTensors.Ptr(input), Out = DeviceTensors.Ptr(output),
            InB = input.shape[0] > 1 ? input.stride(0) : 0, InH = input.stride(1), InT = input.stride(2),
            OutB = output.shape[0] > 1 ? output.stride(0) : 0, OutH = output.stride(1), OutT = output.stride(2),
            Rows = input.shape[0] * input.shape[1] * input.shape[2], Heads = (int)input.shape[1],
        };
    }

    /// <summary>Rotates q (and k when given) forward, or their gradients backward, into new tensors of the same layout.</summary>
    static (Tensor Q, Tensor? K)? Kernel(Tensor q, Tensor? k, Tensor cos, Tensor sin, bool backward)
    {
        string name = "qln_rope_" + (backward ? "bwd" : "fwd") + (q.dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");
        if (Ptx.TryFunction(name) is not { } fn) return null;
        if (backward && (!Fits(q, cos) || (k is not null && !Fits(k, cos)))) return null; // incoming gradients' layout
        var qOut = empty_like(q);   // same strides as the input (a dense permuted view stays so)
        var kOut = k is null ? null : empty_like(k);
        if (!Fits(qOut, cos) || (kOut is not null && !Fits(kOut, cos))) { qOut.Dispose(); kOut?.Dispose(); return null; }
        var tq = RopeTensor.Of(q, qOut);
        var tk = k is null ? tq : RopeTensor.Of(k, kOut!);
        IntPtr pc = DeviceTensors.Ptr(cos), ps = DeviceTensors.Ptr(sin);
        int t = (int)q.shape[2], d = (int)q.shape[3];
        long csB = cos.shape[0] > 1 ? cos.stride(0) : 0, csT = cos.stride(1);
        void** args = stackalloc void*[] { &tq, &tk, &pc, &ps, &t, &d, &csB, &csT };
        long threads = Math.Max(tq.Rows, k is null ? 0 : tk.Rows) * (d / 16);
        uint gridX = DeviceTensors.Blocks(threads, Threads) ?? 0;
        if (gridX > 0) CudaDriver.Launch(fn, gridX, k is null ? 1u : 2u, Threads, args);
        return (qOut, kOut);
    }

    /// <summary>forward(q, k or null, cos, sin, useKernel) -> [q rotated, k rotated (when given)].</summary>
    sealed class RopeFunction : autograd.MultiTensorFunction<RopeFunction>
    {
        public override string Name => "FusedRope";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (q, k, cos, sin, useKernel) = ((Tensor)vars[0], vars[1] as Tensor, (Tensor)vars[2], (Tensor)vars[3], (bool)vars[4]);
            ctx.save_for_backward([cos, sin]);
            ctx.save_data("useKernel", useKernel);
            ctx.save_data("hasK", k is not null);
            if (useKernel && Kernel(q, k, cos, sin, backward: false) is { } r)
                return r.K is null ? [r.Q] : [r.Q, r.K];
            var qr = RopeReference.Forward(q, cos, sin);
            return k is null ? [qr] : [qr, RopeReference.Forward(k, cos, sin)];
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (cos, sin) = (saved[0], saved[1]);
            bool useKernel = (bool)ctx.get_data("useKernel"), hasK = (bool)ctx.get_data("hasK");
            var (dq, dk) = (gradOutputs[0], hasK ? gradOutputs[1] : null);
            Tensor gq;
            Tensor? gk;
            if (useKernel && Kernel(dq, dk, cos, sin, backward: true) is { } r)
                (gq, gk) = r;
            else
                (gq, gk) = (RopeReference.Backward(dq, cos, sin), dk is null ? null : RopeReference.Backward(dk, cos, sin));
            foreach (var t in saved) t.Dispose();
            foreach (var g in gradOutputs) g.Dispose(); // see BackwardHandles
            return [BackwardHandles.Defer(gq), gk is null ? null! : BackwardHandles.Defer(gk), null!, null!, null!];
        }
    }
}
