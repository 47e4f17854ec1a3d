using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Inverted dropout whose keep mask is a counter-based hash of a draw key (Cuda/dropout.cu), computed inside the
/// kernel each way instead of by the ~15 int64 tensor ops of Models.RandomStream.KeepMask, and never stored: the
/// backward kernel hashes the same counters again, so no mask tensor is kept for backward either. The bits are
/// RandomStream's for the same key and threshold, and the arithmetic is the reference's
/// (<see cref="ApplyReference"/>: x.mul(keep).mul_(scale), each op rounding to the dtype), so the two paths agree
/// bit for bit (`bench kernel` checks it on the device, tests/KernelsOnCpu/check_dropout.cpp on the CPU).
/// The caller owns the random stream: it draws the key (RandomStream.NextKey) and takes this kernel where
/// <see cref="Fits"/>, else the stream's mask and <see cref="ApplyReference"/>.
/// </summary>
public sealed unsafe class FusedDropout : FusedOp
{
    internal const string PtxFile = "dropout.ptx";
    const int Threads = 256; // kThreads in dropout.cu; 8 elements per thread

    internal FusedDropout(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames =>
        from direction in new[] { "fwd", "bwd" }
        from dtype in new[] { "bf16", "f32" }
        select $"qln_dropout_{direction}_{dtype}";

    /// <summary>True when the kernel takes <paramref name="x"/>: a bf16/fp32 CUDA tensor with a multiple of 8 elements.</summary>
    public bool Fits(Tensor x) =>
        Module is not null && x.device_type == DeviceType.CUDA && DeviceTensors.IsKernelDType(x.dtype) && x.numel() % 8 == 0
        && DeviceTensors.Blocks(x.numel() / 8, Threads) is not null;

    /// <summary>y = x * keep * scale with keep[i] = hash(key, i) &gt;= threshold (dropout.cu); <see cref="Fits"/>(x) must hold.</summary>
    /// <param name="x">(...) any shape, in the compute dtype.</param>
    /// <param name="key">the draw's key (RandomStream.NextKey).</param>
    /// <param name="threshold">keep when the element's 16 random bits are at least this (round(p * 65536)).</param>
    /// <param name="scale">1 / keep probability.</param>
    /// <param name="handles">where backward defers the gradient it returns (the model's).</param>
    public Tensor Apply(Tensor x, ulong key, long threshold, double scale, BackwardHandles handles)
    {
        if (!Fits(x)) throw new ArgumentException("the dropout kernel does not take this tensor (check Fits first)");
        if (threshold is < 0 or > 65536) throw new ArgumentOutOfRangeException(nameof(threshold), threshold, "must be in [0, 65536]");
        CountKernel();
        if (!KernelPath.NeedsGraph(x)) return Kernel(x, key, threshold, scale, backward: false);
        return DropoutFunction.Call(x, key, threshold, scale, this, handles);
    }

    /// <summary>dx = dy * keep * scale for the mask of <see cref="Apply"/>'s draw (the kernel hashes the same key):
    /// the autograd function's backward, for a backward written out by hand (the decoder layer's).</summary>
    public Tensor Backward(Tensor dy, ulong key, long threshold, double scale) => Kernel(dy, key, threshold, scale, backward: true);

    /// <summary>The torch ops the kernel equals: x.mul(keep).mul_(scale) (LoraDropout's reference, any device).</summary>
    /// <param name="keep">bool mask of x's shape (RandomStream.KeepMask).</param>
    public Tensor ApplyReference(Tensor x, Tensor keep, double scale)
    {
        CountReference();
        using var scope = NewDisposeScope();
        return x.mul(keep).mul_(scale).MoveToOuterDisposeScope();
    }

    Tensor Kernel(Tensor input, ulong key, long threshold, double scale, bool backward)
    {
        using var scope = NewDisposeScope();
        var x = input.contiguous();
        if (!DeviceTensors.Aligned16(x)) x = x.clone(); // a fresh allocation is aligned
        var y = empty_like(x);
        string fn = "qln_dropout_" + (backward ? "bwd" : "fwd") + (x.dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");
        IntPtr px = DeviceTensors.Ptr(x), py = DeviceTensors.Ptr(y);
        uint t = (uint)threshold;
        float s = (float)scale;   // torch casts a double scalar to float for a bf16/fp32 op
        long n8 = x.numel() / 8;
        void** args = stackalloc void*[] { &px, &py, &key, &t, &s, &n8 };
        if (n8 > 0) Launch(fn, DeviceTensors.Blocks(n8, Threads)!.Value, 1, Threads, args);
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>forward(x, key, threshold, scale, op, handles) -> dropped x; backward regenerates the mask.</summary>
    sealed class DropoutFunction : CachelessFunction<DropoutFunction>
    {
        public override string Name => "FusedDropout";

        protected override Tensor Forward(autograd.AutogradContext ctx, object[] vars)
        {
            var (x, key, threshold, scale) = ((Tensor)vars[0], (ulong)vars[1], (long)vars[2], (double)vars[3]);
            var (op, handles) = ((FusedDropout)vars[4], (BackwardHandles)vars[5]);
            ctx.save_data("key", key);
            ctx.save_data("threshold", threshold);
            ctx.save_data("scale", scale);
            ctx.save_data("op", op);
            ctx.save_data("handles", handles);
            return op.Kernel(x, key, threshold, scale, backward: false);
        }

        protected override List<Tensor> Backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardFailure.Guard(() => Gradients(ctx, gradOutput));   // a failure must not cross the native callback

        List<Tensor> Gradients(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var op = (FusedDropout)ctx.get_data("op");
            var handles = (BackwardHandles)ctx.get_data("handles");
            var dx = op.Kernel(gradOutput, (ulong)ctx.get_data("key"), (long)ctx.get_data("threshold"), (double)ctx.get_data("scale"), backward: true);
            gradOutput.Dispose(); // see BackwardHandles
            return [handles.Defer(dx), null!, null!, null!, null!, null!];
        }
    }
}
