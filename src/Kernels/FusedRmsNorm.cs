using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// RMSNorm with a frozen weight as one CUDA kernel each way (Cuda/rms_norm.cu): the row is read once, statistics in
/// fp32, the output written once in the compute dtype, where the torch ops of <see cref="RmsNormReference"/> make
/// about ten passes over an fp32 copy. Also with the residual add fused in front (h = x + residual; y = norm(h)),
/// the pre-norm block's "h + sublayer(...)" then "norm(h)". Same signatures and results as the reference (up to one
/// rounding of the output, see rms_norm.cu), which runs wherever the kernel cannot: CPU tensors, fp16, rows wider
/// than 8192 or not a multiple of 8, or an instance made without the kernel (<see cref="FusedKernels"/> decides).
/// Drop-in: RmsNorm.forward(x) is <c>kernels.RmsNorm.Apply(x, weight, eps, unitOffset, handles)</c>; a decoder
/// layer's <c>h = hidden + attn; y = norm(h)</c> is <c>(h, y) = kernels.RmsNorm.ApplyWithResidual(attn, hidden, weight,
/// eps, unitOffset, handles)</c>, with handles the model's <see cref="BackwardHandles"/>.
/// </summary>
public sealed unsafe class FusedRmsNorm : FusedOp
{
    internal const string PtxFile = "rms_norm.ptx";
    const int Threads = 256, MaxWidth = 8192; // kThreads, kThreads * kMaxChunks * 8 in rms_norm.cu

    internal FusedRmsNorm(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames =>
        from direction in new[] { "fwd", "bwd" }
        from residual in new[] { false, true }
        from unitOffset in new[] { false, true }
        from dtype in new[] { ScalarType.BFloat16, ScalarType.Float32 }
        select "qln_rmsnorm_" + direction + Suffix(residual, unitOffset, dtype);

    /// <summary>y = RMSNorm(x) * weight (or * (1 + weight) with <paramref name="unitOffset"/>, Gemma).</summary>
    /// <param name="x">(..., H) in the compute dtype.</param>
    /// <param name="weight">(H), frozen.</param>
    /// <returns>(..., H) in x's dtype.</returns>
    /// <param name="handles">where backward defers the gradient it returns (the model's).</param>
    public Tensor Apply(Tensor x, Tensor weight, double eps, bool unitOffset, BackwardHandles handles)
    {
        if (!KernelFits(x, null, weight))
        {
            CountReference();
            return RmsNormReference.Forward(x, weight, eps, unitOffset);
        }
        CountKernel();
        if (!KernelPath.NeedsGraph(x) && ForwardKernel(x, null, weight, eps, unitOffset) is { } k)
        {
            k.InverseRms.Dispose();
            return k.Y;
        }
        return NormFunction.Call(x, weight, eps, unitOffset, this, handles);
    }

    /// <summary>h = x + residual (rounded to the compute dtype, as a torch add) and y = RMSNorm(h) * weight.</summary>
    /// <param name="x">(..., H) the sublayer's output.</param>
    /// <param name="residual">(..., H) the residual stream.</param>
    /// <returns>Sum: h, the new residual stream; Normed: y, the next sublayer's input.</returns>
    public (Tensor Sum, Tensor Normed) ApplyWithResidual(Tensor x, Tensor residual, Tensor weight, double eps, bool unitOffset,
        BackwardHandles handles)
    {
        if (KernelFits(x, residual, weight))
        {
            CountKernel();
            if (!KernelPath.NeedsGraph(x, residual) && ForwardKernel(x, residual, weight, eps, unitOffset) is { H: { } kh } k)
            {
                k.InverseRms.Dispose();
                return (kh, k.Y);
            }
            var outputs = AddNormFunction.Call(x, residual, weight, eps, unitOffset, this, handles);
            return (outputs[0], outputs[1]);
        }
        CountReference();
        var h = x + residual;
        return (h, RmsNormReference.Forward(h, weight, eps, unitOffset));
    }

    /// <summary>What <see cref="BackwardFromSaved"/> needs of a forward: h (the normalised input, the sum with a
    /// residual), its per-row inverse RMS in fp32, and whether the kernel made them.</summary>
    public sealed record Saved(Tensor H, Tensor InverseRms, bool ByKernel) : IDisposable
    {
        public void Dispose()
        {
            H.Dispose();
            InverseRms.Dispose();
        }
    }

    /// <summary>
    /// Forward with no autograd, for a backward written out by hand (the decoder layer's): the same values as
    /// <see cref="Apply"/> (no residual) or <see cref="ApplyWithResidual"/>, plus what <see cref="BackwardFromSaved"/>
    /// needs. Counted like them.
    /// </summary>
    /// <returns>Y (..., H) the norm's output; Saved.H is the sum with a residual, the input (contiguous) without.</returns>
    public (Tensor Y, Saved Saved) ForwardSaving(Tensor x, Tensor? residual, Tensor weight, double eps, bool unitOffset)
    {
        if (KernelFits(x, residual, weight))
        {
            CountKernel();
            if (ForwardKernel(x, residual, weight, eps, unitOffset) is { } k)
                return (k.Y, new Saved(k.H ?? x.contiguous(), k.InverseRms, true));
        }
        else CountReference();
        var h = residual is null ? x.alias() : x + residual;
        return (RmsNormReference.Forward(h, weight, eps, unitOffset), new Saved(h, RmsNormReference.InverseRms(h, eps), false));
    }

    /// <summary>dx from dy and a forward's <see cref="Saved"/>, plus <paramref name="dh"/> (the gradient of h's other
    /// use, the residual stream) when given: the autograd functions' backward.</summary>
    public Tensor BackwardFromSaved(Tensor dy, Saved saved, Tensor weight, Tensor? dh, bool unitOffset)
    {
        if (saved.ByKernel && BackwardKernel(dy, saved.H, saved.InverseRms, weight, dh, unitOffset) is { } dx) return dx;
        using var scope = NewDisposeScope();
        var norm = RmsNormReference.Backward(dy, saved.H, saved.InverseRms, weight, unitOffset);
        return (dh is null ? norm : dh.to(saved.H.dtype) + norm).MoveToOuterDisposeScope();
    }

    /// <summary>The autograd functions with the torch-op forward and closed-form backward instead of the kernels: what
    /// CPU tests run to check the functions' plumbing (saved tensors, gradient routing) against plain autograd.</summary>
    internal static Tensor ApplyWithReferenceFunction(Tensor x, Tensor weight, double eps, bool unitOffset, BackwardHandles handles) =>
        NormFunction.Call(x, weight, eps, unitOffset, null!, handles);

    internal static (Tensor Sum, Tensor Normed) ApplyWithResidualReferenceFunction(Tensor x, Tensor residual, Tensor weight, double eps,
        bool unitOffset, BackwardHandles handles)
    {
        var outputs = AddNormFunction.Call(x, residual, weight, eps, unitOffset, null!, handles);
        return (outputs[0], outputs[1]);
    }

    bool KernelFits(Tensor x, Tensor? residual, Tensor weight)
    {
        if (Module is null || x.device_type != DeviceType.CUDA) return false;
        if (!DeviceTensors.IsKernelDType(x.dtype) || weight.dtype != x.dtype || weight.dim() != 1) return false;
        long width = x.shape[^1];
        if (width % 8 != 0 || width > MaxWidth || weight.shape[0] != width || x.numel() / width > int.MaxValue) return false;
        if (residual is not null && (residual.dtype != x.dtype || !residual.shape.SequenceEqual(x.shape))) return false;
        return residual is null ? DeviceTensors.OnOneCudaDevice(x, weight) : DeviceTensors.OnOneCudaDevice(x, residual, weight);
    }

    static string Suffix(bool residual, bool unitOffset, ScalarType dtype) =>
        (residual ? "_res" : "") + (unitOffset ? "_gemma" : "") + (dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");

    /// <summary>Forward kernel: y (and h with a residual) plus the per-row inverse RMS, or null if it cannot launch.</summary>
    (Tensor Y, Tensor? H, Tensor InverseRms)? ForwardKernel(Tensor x, Tensor? residual, Tensor weight, double eps, bool unitOffset)
    {
        string fn = "qln_rmsnorm_fwd" + Suffix(residual is not null, unitOffset, x.dtype);
        using var scope = NewDisposeScope();
        var xc = x.contiguous();
        var rc = residual?.contiguous();
        var wc = weight.contiguous();
        if (!DeviceTensors.Aligned16(xc) || !DeviceTensors.Aligned16(wc) || (rc is not null && !DeviceTensors.Aligned16(rc))) return null;
        int width = (int)x.shape[^1];
        long rows = x.numel() / width;
        var y = empty_like(xc);
        var h = rc is null ? null : empty_like(xc);
        var inverseRms = empty(x.shape[..^1], ScalarType.Float32, x.device);
        IntPtr px = DeviceTensors.Ptr(xc), pr = rc is null ? IntPtr.Zero : DeviceTensors.Ptr(rc), pw = DeviceTensors.Ptr(wc);
        IntPtr py = DeviceTensors.Ptr(y), ph = h is null ? IntPtr.Zero : DeviceTensors.Ptr(h), ps = DeviceTensors.Ptr(inverseRms);
        float epsF = (float)eps;
        void** args = stackalloc void*[] { &px, &pr, &pw, &py, &ph, &ps, &width, &epsF };
        if (rows > 0) Launch(fn, (uint)rows, 1, Threads, args);
        return (y.MoveToOuterDisposeScope(), h?.MoveToOuterDisposeScope(), inverseRms.MoveToOuterDisposeScope());
    }

    /// <summary>Backward kernel: dx from dy, the saved h and inverse RMS (plus dh, the gradient of h's other use).</summary>
    Tensor? BackwardKernel(Tensor dy, Tensor h, Tensor inverseRms, Tensor weight, Tensor? dh, bool unitOffset)
    {
        string fn = "qln_rmsnorm_bwd" + Suffix(dh is not null, unitOffset, h.dtype);
        if (!h.is_contiguous() || !DeviceTensors.Aligned16(h) || !DeviceTensors.Aligned16(weight)) return null;
        using var scope = NewDisposeScope();
        var dyc = dy.to(h.dtype).contiguous();
        var dhc = dh?.to(h.dtype).contiguous();
        var wc = weight.contiguous();
        if (!DeviceTensors.Aligned16(dyc) || (dhc is not null && !DeviceTensors.Aligned16(dhc))) return null;
        int width = (int)h.shape[^1];
        long rows = h.numel() / width;
        var dx = empty_like(h);
        IntPtr pdy = DeviceTensors.Ptr(dyc), ph = DeviceTensors.Ptr(h), ps = DeviceTensors.Ptr(inverseRms), pw = DeviceTensors.Ptr(wc);
        IntPtr pdh = dhc is null ? IntPtr.Zero : DeviceTensors.Ptr(dhc), pdx = DeviceTensors.Ptr(dx);
        void** args = stackalloc void*[] { &pdy, &ph, &ps, &pw, &pdh, &pdx, &width };
        if (rows > 0) Launch(fn, (uint)rows, 1, Threads, args);
        return dx.MoveToOuterDisposeScope();
    }

    /// <summary>y = norm(x): forward(x, weight, eps, unitOffset, op (null: the reference), handles).</summary>
    sealed class NormFunction : CachelessFunction<NormFunction>
    {
        public override string Name => "FusedRmsNorm";

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (x, weight, eps, unitOffset) = ((Tensor)vars[0], (Tensor)vars[1], (double)vars[2], (bool)vars[3]);
            var (op, handles) = (vars[4] as FusedRmsNorm, (BackwardHandles)vars[5]);
            using var scope = NewDisposeScope();
            Tensor y, h, inverseRms;
            var k = op?.ForwardKernel(x, null, weight, eps, unitOffset);
            if (k is { } kk)
                (y, h, inverseRms) = (kk.Y, x.contiguous(), kk.InverseRms);
            else
                (y, h, inverseRms) = (RmsNormReference.Forward(x, weight, eps, unitOffset), x, RmsNormReference.InverseRms(x, eps));
            ctx.save_for_backward([SavedTensors.Keep(h), SavedTensors.Keep(inverseRms), weight]);
            ctx.save_data("unitOffset", unitOffset);
            ctx.save_data("op", k is null ? null! : op!); // backward's kernel wants forward's contiguous h
            ctx.save_data("handles", handles);
            return y.MoveToOuterDisposeScope();
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (h, inverseRms, weight) = (saved[0], saved[1], saved[2]);
            bool unitOffset = (bool)ctx.get_data("unitOffset");
            var (op, handles) = (ctx.get_data("op") as FusedRmsNorm, (BackwardHandles)ctx.get_data("handles"));
            Tensor dx;
            using (var scope = NewDisposeScope())
            {
                dx = (op?.BackwardKernel(gradOutput, h, inverseRms, weight, null, unitOffset)
                      ?? RmsNormReference.Backward(gradOutput, h, inverseRms, weight, unitOffset)).MoveToOuterDisposeScope();
            }
            foreach (var t in saved) t.Dispose();
            gradOutput.Dispose(); // see BackwardHandles
            return [handles.Defer(dx), null!, null!, null!, null!, null!];
        }
    }

    /// <summary>(h, y) = (x + residual, norm(x + residual)): forward(x, residual, weight, eps, unitOffset, op, handles).</summary>
    sealed class AddNormFunction : CachelessMultiFunction<AddNormFunction>
    {
        public override string Name => "FusedAddRmsNorm";

        protected override List<Tensor> Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (x, residual, weight) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2]);
            var (eps, unitOffset) = ((double)vars[3], (bool)vars[4]);
            var (op, handles) = (vars[5] as FusedRmsNorm, (BackwardHandles)vars[6]);
            using var scope = NewDisposeScope();
            Tensor y, h, inverseRms;
            var k = op?.ForwardKernel(x, residual, weight, eps, unitOffset);
            if (k is { H: { } kh } kk)
                (y, h, inverseRms) = (kk.Y, kh, kk.InverseRms);
            else
            {
                h = x + residual;
                (y, inverseRms) = (RmsNormReference.Forward(h, weight, eps, unitOffset), RmsNormReference.InverseRms(h, eps));
            }
            ctx.save_for_backward([SavedTensors.Keep(h), SavedTensors.Keep(inverseRms), weight]);
            ctx.save_data("unitOffset", unitOffset);
            ctx.save_data("op", k is null ? null! : op!);
            ctx.save_data("handles", handles);
            return [h.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope()];
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutputs));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var saved = ctx.get_saved_variables();
            var (h, inverseRms, weight) = (saved[0], saved[1], saved[2]);
            bool unitOffset = (bool)ctx.get_data("unitOffset");
            var (op, handles) = (ctx.get_data("op") as FusedRmsNorm, (BackwardHandles)ctx.get_data("handles"));
            var (dh, dy) = (gradOutputs[0], gradOutputs[1]); // materialized: zeros where an output got no gradient
            Tensor dx;
            using (var scope = NewDisposeScope())
            {
                // Autograd would add the two gradients of h in the compute dtype: dh + (norm's dx rounded to it).
                dx = (op?.BackwardKernel(dy, h, inverseRms, weight, dh, unitOffset)
                      ?? dh.to(h.dtype) + RmsNormReference.Backward(dy, h, inverseRms, weight, unitOffset)).MoveToOuterDisposeScope();
            }
            foreach (var t in saved) t.Dispose();
            foreach (var g in gradOutputs) g.Dispose();
            // x and residual enter h = x + residual alike: both get dx (two handles, each released after backward).
            return [handles.Defer(dx), handles.Defer(dx.alias()), null!, null!, null!, null!, null!];
        }
    }
}
