using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// act(gate) * up as one CUDA kernel each way (Cuda/glu.cu): forward reads gate and up once and writes the product,
/// backward writes both gradients in one pass, and only the two inputs are kept for backward (autograd through the
/// reference keeps act(gate) as well). Same values as <see cref="GluReference"/> up to the last bit of e^x inside
/// the activation (glu.cu states the bound); the reference runs wherever the kernel cannot (CPU, fp16, sizes not
/// a multiple of 8, or an instance made without the kernel: <see cref="FusedKernels"/> decides).
/// gate and up may be row-strided views, such as the two halves of one (..., 2I) product when the gate and up
/// projections run as one GEMM (Quant.FrozenLinearGroup): the kernel reads them through their row strides instead
/// of copying them contiguous first.
/// Drop-in: LlamaMlp's <c>F.silu(gate) * up</c> is <c>kernels.Glu.Apply(gate, up, GluActivation.Silu, handles)</c>.
/// </summary>
public sealed unsafe class FusedGlu : FusedOp
{
    internal const string PtxFile = "glu.ptx";
    const int Threads = 256; // kThreads in glu.cu; 8 elements per thread

    internal FusedGlu(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames =>
        from direction in new[] { "fwd", "bwd", "fwd_rows", "bwd_rows" }
        from activation in new[] { GluActivation.Silu, GluActivation.GeluTanh }
        from dtype in new[] { ScalarType.BFloat16, ScalarType.Float32 }
        select "qln_glu_" + direction + "_" + Suffix(activation, dtype);

    /// <param name="gate">(..., I) gate projection output.</param>
    /// <param name="up">(..., I) up projection output, same shape and dtype.</param>
    /// <param name="handles">where backward defers the gradients it returns (the model's).</param>
    /// <returns>(..., I) act(gate) * up.</returns>
    public Tensor Apply(Tensor gate, Tensor up, GluActivation activation, BackwardHandles handles)
    {
        if (!KernelFits(gate, up))
        {
            CountReference();
            return GluReference.Forward(gate, up, activation);
        }
        CountKernel();
        if (!KernelPath.NeedsGraph(gate, up) && ForwardKernel(gate, up, activation) is { } output) return output;
        return GluFunction.Call(gate, up, activation, this, handles);
    }

    /// <summary>The gradients of gate and up from that of act(gate) * up, as the autograd function's backward computes
    /// them: for a backward written out by hand (the decoder layer's).</summary>
    public (Tensor DGate, Tensor DUp) Backward(Tensor dy, Tensor gate, Tensor up, GluActivation activation) =>
        (KernelFits(gate, up) ? BackwardKernel(dy, gate, up, activation) : null) ?? GluReference.Backward(dy, gate, up, activation);

    /// <summary>The autograd function with the reference forward and backward (CPU tests of its plumbing).</summary>
    internal static Tensor ApplyWithReferenceFunction(Tensor gate, Tensor up, GluActivation activation, BackwardHandles handles) =>
        GluFunction.Call(gate, up, activation, null!, handles);

    bool KernelFits(Tensor gate, Tensor up) =>
        Module is not null && gate.device_type == DeviceType.CUDA && DeviceTensors.IsKernelDType(gate.dtype)
        && up.dtype == gate.dtype && up.shape.SequenceEqual(gate.shape) && gate.numel() % 8 == 0
        && DeviceTensors.OnOneCudaDevice(gate, up);

    static string Suffix(GluActivation activation, ScalarType dtype) =>
        (activation == GluActivation.Silu ? "swiglu" : "geglu") + (dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");

    /// <summary>The stride between rows of <paramref name="t"/> (..., cols) read as (rows, cols), when its last
    /// dimension is contiguous, the leading ones collapse into one and each row starts 16-byte aligned; else null
    /// (the kernel then reads a contiguous copy).</summary>
    internal static long? RowStride(Tensor t)
    {
        int d = (int)t.dim();
        if (d == 0 || t.stride(-1) != 1) return null;
        if (d == 1) return t.size(0);
        for (int k = 0; k < d - 2; k++)
            if (t.stride(k) != t.stride(k + 1) * t.size(k + 1)) return null;
        long ld = t.stride(d - 2);
        return ld >= t.size(-1) && ld % 8 == 0 ? ld : null;
    }

    const int RowThreads = 128;   // threads per block of the row kernels: 2% idle lanes on a 7B model's 1376 vectors a row

    /// <summary>How the kernel reads gate and up: both contiguous (the flat kernel), both row-strided (the row
    /// kernel, no copy), or else contiguous copies of both.</summary>
    static (Tensor G, Tensor U, long? Ldg, long? Ldu) Readable(Tensor gate, Tensor up)
    {
        if (gate.is_contiguous() && up.is_contiguous()) return (gate, up, null, null);
        if (gate.size(-1) % 8 == 0 && RowStride(gate) is { } ldg && RowStride(up) is { } ldu) return (gate, up, ldg, ldu);
        return (gate.contiguous(), up.contiguous(), null, null);
    }

    /// <summary>The row kernel's grid: vectors of a row across x, rows across y (the kernel loops past 65535).</summary>
    static (uint X, uint Y)? RowGrid(long rows, long cols8) =>
        DeviceTensors.Blocks(cols8, RowThreads) is { } x && rows > 0 ? (x, (uint)Math.Min(rows, 65535)) : null;

    Tensor? ForwardKernel(Tensor gate, Tensor up, GluActivation activation)
    {
        using var scope = NewDisposeScope();
        var (g, u, ldg, ldu) = Readable(gate, up);
        if (!DeviceTensors.Aligned16(g) || !DeviceTensors.Aligned16(u)) return null;
        var output = empty(gate.shape, gate.dtype, gate.device);                          // (..., I) contiguous
        long cols8 = gate.size(-1) / 8, n8 = gate.numel() / 8, rows = n8 / Math.Max(1, cols8);
        IntPtr pg = DeviceTensors.Ptr(g), pu = DeviceTensors.Ptr(u), po = DeviceTensors.Ptr(output);
        if (ldg is long sg && ldu is long su)
        {
            if (RowGrid(rows, cols8) is not { } grid) return null;
            void** rowArgs = stackalloc void*[] { &pg, &pu, &po, &rows, &cols8, &sg, &su };
            Launch("qln_glu_fwd_rows_" + Suffix(activation, gate.dtype), grid.X, grid.Y, RowThreads, rowArgs);
            return output.MoveToOuterDisposeScope();
        }
        void** args = stackalloc void*[] { &pg, &pu, &po, &n8 };
        if (DeviceTensors.Blocks(n8, Threads) is not { } blocks) return null;
        Launch("qln_glu_fwd_" + Suffix(activation, gate.dtype), blocks, 1, Threads, args);
        return output.MoveToOuterDisposeScope();
    }

    (Tensor DGate, Tensor DUp)? BackwardKernel(Tensor dy, Tensor gate, Tensor up, GluActivation activation)
    {
        using var scope = NewDisposeScope();
        var d = dy.to(gate.dtype).contiguous();
        var (g, u, ldg, ldu) = Readable(gate, up);
        if (!DeviceTensors.Aligned16(d) || !DeviceTensors.Aligned16(g) || !DeviceTensors.Aligned16(u)) return null;
        var (dg, du) = (empty(gate.shape, gate.dtype, gate.device), empty(up.shape, up.dtype, up.device));   // contiguous
        long cols8 = gate.size(-1) / 8, n8 = gate.numel() / 8, rows = n8 / Math.Max(1, cols8);
        IntPtr pd = DeviceTensors.Ptr(d), pg = DeviceTensors.Ptr(g), pu = DeviceTensors.Ptr(u);
        IntPtr pdg = DeviceTensors.Ptr(dg), pdu = DeviceTensors.Ptr(du);
        if (ldg is long sg && ldu is long su)
        {
            if (RowGrid(rows, cols8) is not { } grid) return null;
            void** rowArgs = stackalloc void*[] { &pd, &pg, &pu, &pdg, &pdu, &rows, &cols8, &sg, &su };
            Launch("qln_glu_bwd_rows_" + Suffix(activation, gate.dtype), grid.X, grid.Y, RowThreads, rowArgs);
            return (dg.MoveToOuterDisposeScope(), du.MoveToOuterDisposeScope());
        }
        void** args = stackalloc void*[] { &pd, &pg, &pu, &pdg, &pdu, &n8 };
        if (DeviceTensors.Blocks(n8, Threads) is not { } blocks) return null;
        Launch("qln_glu_bwd_" + Suffix(activation, gate.dtype), blocks, 1, Threads, args);
        return (dg.MoveToOuterDisposeScope(), du.MoveToOuterDisposeScope());
    }

    /// <summary>forward(gate, up, activation, op (null: the reference), handles) -> act(gate) * up.</summary>
    sealed class GluFunction : CachelessFunction<GluFunction>
    {
        public override string Name => "FusedGlu";

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (gate, up, activation) = ((Tensor)vars[0], (Tensor)vars[1], (GluActivation)vars[2]);
            var (op, handles) = (vars[3] as FusedGlu, (BackwardHandles)vars[4]);
            ctx.save_for_backward([gate, up]);
            ctx.save_data("activation", activation);
            ctx.save_data("op", op!);
            ctx.save_data("handles", handles);
            return op?.ForwardKernel(gate, up, activation) ?? GluReference.Forward(gate, up, activation);
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var saved = ctx.get_saved_variables();
            var (gate, up) = (saved[0], saved[1]);
            var activation = (GluActivation)ctx.get_data("activation");
            var (op, handles) = (ctx.get_data("op") as FusedGlu, (BackwardHandles)ctx.get_data("handles"));
            var (dg, du) = op?.BackwardKernel(gradOutput, gate, up, activation)
                           ?? GluReference.Backward(gradOutput, gate, up, activation);
            foreach (var t in saved) t.Dispose();
            gradOutput.Dispose(); // see BackwardHandles
            return [handles.Defer(dg), handles.Defer(du), null!, null!, null!];
        }
    }
}
