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
/// Drop-in: LlamaMlp's <c>F.silu(gate) * up</c> is <c>kernels.Glu.Apply(gate, up, GluActivation.Silu, handles)</c>.
/// </summary>
public sealed unsafe class FusedGlu : FusedOp
{
    internal const string PtxFile = "glu.ptx";
    const int Threads = 256; // kThreads in glu.cu; 8 elements per thread

    internal FusedGlu(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames =>
        from direction in new[] { "fwd", "bwd" }
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
        return GluFunction.apply(gate, up, activation, this, handles);
    }

    /// <summary>The gradients of gate and up from that of act(gate) * up, as the autograd function's backward computes
    /// them: for a backward written out by hand (the decoder layer's).</summary>
    public (Tensor DGate, Tensor DUp) Backward(Tensor dy, Tensor gate, Tensor up, GluActivation activation) =>
        (KernelFits(gate, up) ? BackwardKernel(dy, gate, up, activation) : null) ?? GluReference.Backward(dy, gate, up, activation);

    /// <summary>The autograd function with the reference forward and backward (CPU tests of its plumbing).</summary>
    internal static Tensor ApplyWithReferenceFunction(Tensor gate, Tensor up, GluActivation activation, BackwardHandles handles) =>
        GluFunction.apply(gate, up, activation, null!, handles);

    bool KernelFits(Tensor gate, Tensor up) =>
        Module is not null && gate.device_type == DeviceType.CUDA && DeviceTensors.IsKernelDType(gate.dtype)
        && up.dtype == gate.dtype && up.shape.SequenceEqual(gate.shape) && gate.numel() % 8 == 0
        && DeviceTensors.OnOneCudaDevice(gate, up);

    static string Suffix(GluActivation activation, ScalarType dtype) =>
        (activation == GluActivation.Silu ? "swiglu" : "geglu") + (dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");

    Tensor? ForwardKernel(Tensor gate, Tensor up, GluActivation activation)
    {
        string fn = "qln_glu_fwd_" + Suffix(activation, gate.dtype);
        using var scope = NewDisposeScope();
        var (g, u) = (gate.contiguous(), up.contiguous());
        if (!DeviceTensors.Aligned16(g) || !DeviceTensors.Aligned16(u)) return null;
        var output = empty_like(g);
        long n8 = g.numel() / 8;
        IntPtr pg = DeviceTensors.Ptr(g), pu = DeviceTensors.Ptr(u), po = DeviceTensors.Ptr(output);
        void** args = stackalloc void*[] { &pg, &pu, &po, &n8 };
        if (DeviceTensors.Blocks(n8, Threads) is not { } blocks) return null;
        Launch(fn, blocks, 1, Threads, args);
        return output.MoveToOuterDisposeScope();
    }

    (Tensor DGate, Tensor DUp)? BackwardKernel(Tensor dy, Tensor gate, Tensor up, GluActivation activation)
    {
        string fn = "qln_glu_bwd_" + Suffix(activation, gate.dtype);
        using var scope = NewDisposeScope();
        var (d, g, u) = (dy.to(gate.dtype).contiguous(), gate.contiguous(), up.contiguous());
        if (!DeviceTensors.Aligned16(d) || !DeviceTensors.Aligned16(g) || !DeviceTensors.Aligned16(u)) return null;
        var (dg, du) = (empty_like(g), empty_like(u));
        long n8 = g.numel() / 8;
        IntPtr pd = DeviceTensors.Ptr(d), pg = DeviceTensors.Ptr(g), pu = DeviceTensors.Ptr(u);
        IntPtr pdg = DeviceTensors.Ptr(dg), pdu = DeviceTensors.Ptr(du);
        void** args = stackalloc void*[] { &pd, &pg, &pu, &pdg, &pdu, &n8 };
        if (DeviceTensors.Blocks(n8, Threads) is not { } blocks) return null;
        Launch(fn, blocks, 1, Threads, args);
        return (dg.MoveToOuterDisposeScope(), du.MoveToOuterDisposeScope());
    }

    /// <summary>forward(gate, up, activation, op (null: the reference), handles) -> act(gate) * up.</summary>
    sealed class GluFunction : autograd.SingleTensorFunction<GluFunction>
    {
        public override string Name => "FusedGlu";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var (gate, up, activation) = ((Tensor)vars[0], (Tensor)vars[1], (GluActivation)vars[2]);
            var (op, handles) = (vars[3] as FusedGlu, (BackwardHandles)vars[4]);
            ctx.save_for_backward([gate, up]);
            ctx.save_data("activation", activation);
            ctx.save_data("op", op!);
            ctx.save_data("handles", handles);
            return op?.ForwardKernel(gate, up, activation) ?? GluReference.Forward(gate, up, activation);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
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
