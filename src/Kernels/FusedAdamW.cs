using QLoraNet.Kernels.Cuda;

namespace QLoraNet.Kernels;

/// <summary>
/// The multi-tensor AdamW kernel (Cuda/adamw.cu) as loaded for a device, or its absence; stateless, shared by every
/// <see cref="MultiTensorAdamW"/> of the run (each keeps its own pointer table).
/// </summary>
public sealed unsafe class FusedAdamW : FusedOp
{
    internal const string PtxFile = "adamw.ptx";
    const int Threads = 256; // kThreads in adamw.cu

    internal FusedAdamW(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames => ["qln_adamw"];

    internal void Launch(uint blocks, void** args) => Launch("qln_adamw", blocks, 1, Threads, args);

    internal void Counted(bool kernel)
    {
        if (kernel) CountKernel();
        else CountReference();
    }
}
