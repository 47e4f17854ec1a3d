using QLoraNet.Kernels.Cuda;

namespace QLoraNet.Kernels;

/// <summary>Which code computes a fused op.</summary>
public enum FusedPath
{
    /// <summary>Our CUDA kernel (PTX loaded into the device's context).</summary>
    CudaPtx,

    /// <summary>A cuBLAS entry point that torch has and TorchSharp does not bind (<see cref="Cuda.Cublas"/>).</summary>
    Cublas,

    /// <summary>The op's torch-op reference (any device).</summary>
    TorchOps,
}

/// <summary>
/// What every fused op shares: the PTX module its kernels come from (null: the op runs its torch-op reference on
/// every tensor), why (for the report), and a tally of the calls each path served, so a run can show that nothing
/// fell back quietly (`bench train --profile` prints it). Ops are made by <see cref="FusedKernels"/>; the tally is
/// the only thing that changes, and it is the op instance's own (no process-wide state).
/// </summary>
public abstract class FusedOp
{
    long _kernelCalls, _referenceCalls;

    private protected FusedOp(PtxModule? module, string reason)
    {
        Module = module;
        Reason = reason;
    }

    /// <summary>The loaded kernels, or null when this op runs its reference everywhere.</summary>
    private protected PtxModule? Module { get; }

    /// <summary>The path calls take where the tensors fit the kernel (CPU tensors always take the reference).</summary>
    public virtual FusedPath Path => Module is null ? FusedPath.TorchOps : FusedPath.CudaPtx;

    /// <summary>Why this path (for the report).</summary>
    public string Reason { get; }

    /// <summary>Calls served by the kernel and by the reference since the op was made.</summary>
    public (long Kernel, long Reference) Calls => (Interlocked.Read(ref _kernelCalls), Interlocked.Read(ref _referenceCalls));

    private protected void CountKernel() => Interlocked.Increment(ref _kernelCalls);

    private protected void CountReference() => Interlocked.Increment(ref _referenceCalls);

    /// <summary>Launches kernel <paramref name="name"/> of <see cref="Module"/> on stream 0.</summary>
    private protected unsafe void Launch(string name, uint gridX, uint gridY, uint blockX, void** args, uint sharedBytes = 0) =>
        CudaDriver.Launch(Module!.Context, Module.Function(name), gridX, gridY, blockX, args, sharedBytes);

    /// <summary>"cuda-ptx", "cublas" or "torch-ops".</summary>
    public static string Spell(FusedPath path) => path switch
    {
        FusedPath.CudaPtx => "cuda-ptx",
        FusedPath.Cublas => "cublas",
        _ => "torch-ops",
    };
}
