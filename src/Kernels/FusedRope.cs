using System.Runtime.InteropServices;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Rotary position embedding of q and k in one CUDA kernel each way (Cuda/rope.cu), reading the (B, heads, T, D)
/// views of the projections in place and writing the rotated tensors in the same layout: one pass instead of the
/// reference's six (two slices, a negation, a concatenation, two multiplies and an add per tensor). Equal bit for bit
/// to <see cref="RopeReference"/>, which runs wherever the kernel cannot (CPU, fp16, odd layouts, or an instance made
/// without the kernel: <see cref="FusedKernels"/> decides). cos/sin are read as given (RotaryEmbedding computes them
/// once per forward).
/// Drop-in: <c>RotaryEmbedding.Apply(x, cos, sin)</c> is <c>kernels.Rope.Apply(x, cos, sin, handles)</c>, and the pair
/// <c>q = Apply(q, ..); k = Apply(k, ..)</c> is <c>(q, k) = kernels.Rope.ApplyQk(q, k, cos, sin, handles)</c>.
/// </summary>
public sealed unsafe class FusedRope : FusedOp
{
    internal const string PtxFile = "rope.ptx";
    const int Threads = 256; // kThreads in rope.cu

    internal FusedRope(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames => ["qln_rope_fwd_bf16", "qln_rope_fwd_f32", "qln_rope_bwd_bf16", "qln_rope_bwd_f32"];

    /// <param name="x">(B, heads, T, D), last dimension contiguous.</param>
    /// <param name="cos">(B, T, D) in x's dtype.</param>
    /// <param name="sin">(B, T, D)</param>
    /// <returns>(B, heads, T, D) x rotated.</returns>
    /// <param name="handles">where backward defers the gradient it returns (the model's).</param>
    public Tensor Apply(Tensor x, Tensor cos, Tensor sin, BackwardHandles handles)
    {
        if (!KernelFits(x, null, cos, sin))
        {
            CountReference();
            return RopeReference.Forward(x, cos, sin);
        }
        CountKernel();
        if (!KernelPath.NeedsGraph(x) && Kernel(x, null, cos, sin, backward: false) is { } r) return r.Q;
        return RopeFunction.Call(x, null!, cos, sin, this, handles)[0];
    }

    /// <summary>Both q (B, heads, T, D) and k (B, kvHeads, T, D) in one launch.</summary>
    public (Tensor Q, Tensor K) ApplyQk(Tensor q, Tensor k, Tensor cos, Tensor sin, BackwardHandles handles)
    {
        if (!KernelFits(q, k, cos, sin))
        {
            CountReference();
            return (RopeReference.Forward(q, cos, sin), RopeReference.Forward(k, cos, sin));
        }
        CountKernel();
        if (!KernelPath.NeedsGraph(q, k) && Kernel(q, k, cos, sin, backward: false) is { K: { } kr } r) return (r.Q, kr);
        var outputs = RopeFunction.Call(q, k, cos, sin, this, handles);
        return (outputs[0], outputs[1]);
    }

    /// <summary>The gradients of q and k from those of their rotations (the inverse rotation), as the autograd
    /// function's backward computes them: for a backward written out by hand (the decoder layer's).</summary>
    public (Tensor DQ, Tensor DK) BackwardQk(Tensor dq, Tensor dk, Tensor cos, Tensor sin)
    {
        if (KernelFits(dq, dk, cos, sin) && Kernel(dq, dk, cos, sin, backward: true) is { K: { } gk } r) return (r.Q, gk);
        return (RopeReference.Backward(dq, cos, sin), RopeReference.Backward(dk, cos, sin));
    }

    /// <summary>The autograd function with the reference forward and backward (CPU tests of its plumbing).</summary>
    internal static (Tensor Q, Tensor K) ApplyQkWithReferenceFunction(Tensor q, Tensor k, Tensor cos, Tensor sin, BackwardHandles handles)
    {
        var outputs = RopeFunction.Call(q, k, cos, sin, null!, handles);
        return (outputs[0], outputs[1]);
    }

    bool KernelFits(Tensor x, Tensor? k, Tensor cos, Tensor sin)
    {
        if (Module is null || x.device_type != DeviceType.CUDA) return false;
        if (!DeviceTensors.IsKernelDType(x.dtype) || cos.dtype != x.dtype || sin.dtype != x.dtype || (k is not null && k.dtype != x.dtype)) return false;
        if (!DeviceTensors.OnOneCudaDevice(x, cos, sin) || (k is not null && !DeviceTensors.OnOneCudaDevice(x, k))) return false;
        var (c, s) = (Layout.Of(cos), Layout.Of(sin));
        if (!Fits(Layout.Of(x), c) || (k is not null && !Fits(Layout.Of(k), c))) return false;
        return c.Shape.Length == 3 && c.Shape.SequenceEqual(s.Shape) && c.Strides.SequenceEqual(s.Strides) && c.Strides[2] == 1
            && c.VectorAligned && s.VectorAligned;
    }

    /// <summary>A tensor's shape, strides and address, read once (each is a native call).</summary>
    readonly record struct Layout(long[] Shape, long[] Strides, long ElementSize, long Address)
    {
        public static Layout Of(Tensor t) => new(t.shape, t.stride(), t.element_size(), DeviceTensors.Ptr(t));

        /// <summary>Every 8-element group the kernel moves starts on a 16-byte boundary.</summary>
        public bool VectorAligned
        {
            get
            {
                long vector = 16 / ElementSize; // elements per 16 bytes
                for (int d = 0; d < Shape.Length - 1; d++)
                    if (Shape[d] > 1 && Strides[d] % vector != 0) return false;
                return Address % 16 == 0;
            }
        }
    }

    /// <summary>(B, heads, T, D) with D a multiple of 16, the last dimension contiguous, groups aligned; cos (B or 1, T, D).</summary>
    static bool Fits(Layout x, Layout cos)
    {
        if (x.Shape.Length != 4 || x.Strides[3] != 1 || x.Shape[3] % 16 != 0) return false;
        if (cos.Shape.Length != 3 || (cos.Shape[0] != x.Shape[0] && cos.Shape[0] != 1) || cos.Shape[1] != x.Shape[2] || cos.Shape[2] != x.Shape[3]) return false;
        if (x.Shape[0] * x.Shape[1] * x.Shape[2] * x.Shape[3] / 16 >= int.MaxValue) return false; // rope.cu's 32-bit thread index
        return x.VectorAligned;
    }

    /// <summary>rope.cu's RopeTensor, passed by value: pointers, element strides (b, head, t) in and out, rows, heads.</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct RopeTensor
    {
        public IntPtr In, Out;
        public long InB, InH, InT, OutB, OutH, OutT;
        public long Rows;
        public int Heads, Pad;

        public static RopeTensor Of(Layout input, Layout output) => new()
        {
            In = (IntPtr)input.Address, Out = (IntPtr)output.Address,
            InB = input.Shape[0] > 1 ? input.Strides[0] : 0, InH = input.Strides[1], InT = input.Strides[2],
            OutB = output.Shape[0] > 1 ? output.Strides[0] : 0, OutH = output.Strides[1], OutT = output.Strides[2],
            Rows = input.Shape[0] * input.Shape[1] * input.Shape[2], Heads = (int)input.Shape[1],
        };
    }

    /// <summary>Rotates q (and k when given) forward, or their gradients backward, into new tensors of the same layout.</summary>
    (Tensor Q, Tensor? K)? Kernel(Tensor q, Tensor? k, Tensor cos, Tensor sin, bool backward)
    {
        string fn = "qln_rope_" + (backward ? "bwd" : "fwd") + (q.dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");
        var (lq, lk, lc) = (Layout.Of(q), k is null ? default : Layout.Of(k), Layout.Of(cos));
        if (backward && (!Fits(lq, lc) || (k is not null && !Fits(lk, lc)))) return null; // incoming gradients' layout
        var qOut = empty_like(q);   // same strides as the input (a dense permuted view stays so)
        var kOut = k is null ? null : empty_like(k);
        var (oq, ok) = (Layout.Of(qOut), kOut is null ? default : Layout.Of(kOut));
        if (!Fits(oq, lc) || (kOut is not null && !Fits(ok, lc))) { qOut.Dispose(); kOut?.Dispose(); return null; }
        var tq = RopeTensor.Of(lq, oq);
        var tk = k is null ? tq : RopeTensor.Of(lk, ok);
        IntPtr pc = (IntPtr)lc.Address, ps = DeviceTensors.Ptr(sin);
        int t = (int)lq.Shape[2], d = (int)lq.Shape[3];
        long csB = lc.Shape[0] > 1 ? lc.Strides[0] : 0, csT = lc.Strides[1];
        void** args = stackalloc void*[] { &tq, &tk, &pc, &ps, &t, &d, &csB, &csT };
        long threads = Math.Max(tq.Rows, k is null ? 0 : tk.Rows) * (d / 16);
        uint gridX = DeviceTensors.Blocks(threads, Threads) ?? 0;
        if (gridX > 0) Launch(fn, gridX, k is null ? 1u : 2u, Threads, args);
        return (qOut, kOut);
    }

    /// <summary>forward(q, k or null, cos, sin, op (null: the reference), handles) -> [q rotated, k rotated (when given)].</summary>
    sealed class RopeFunction : CachelessMultiFunction<RopeFunction>
    {
        public override string Name => "FusedRope";

        protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (q, k, cos, sin) = ((Tensor)vars[0], vars[1] as Tensor, (Tensor)vars[2], (Tensor)vars[3]);
            var (op, handles) = (vars[4] as FusedRope, (BackwardHandles)vars[5]);
            ctx.save_for_backward([cos, sin]);
            ctx.save_data("op", op!);
            ctx.save_data("handles", handles);
            ctx.save_data("hasK", k is not null);
            if (op?.Kernel(q, k, cos, sin, backward: false) is { } r)
                return r.K is null ? [r.Q] : [r.Q, r.K];
            var qr = RopeReference.Forward(q, cos, sin);
            return k is null ? [qr] : [qr, RopeReference.Forward(k, cos, sin)];
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutputs));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (cos, sin) = (saved[0], saved[1]);
            bool hasK = (bool)ctx.get_data("hasK");
            var (op, handles) = (ctx.get_data("op") as FusedRope, (BackwardHandles)ctx.get_data("handles"));
            var (dq, dk) = (gradOutputs[0], hasK ? gradOutputs[1] : null);
            Tensor gq;
            Tensor? gk;
            if (op?.Kernel(dq, dk, cos, sin, backward: true) is { } r)
                (gq, gk) = r;
            else
                (gq, gk) = (RopeReference.Backward(dq, cos, sin), dk is null ? null : RopeReference.Backward(dk, cos, sin));
            foreach (var t in saved) t.Dispose();
            foreach (var g in gradOutputs) g.Dispose(); // see BackwardHandles
            return [handles.Defer(gq), gk is null ? null! : handles.Defer(gk), null!, null!, null!, null!];
        }
    }
}
