using System.Runtime.InteropServices;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Kernels;

/// <summary>
/// Rows of a frozen table held in pinned host memory, gathered by id straight into device memory by a CUDA kernel
/// that reads the host table across PCIe (Cuda/embedding.cu): the token embedding of a 7B Llama (0.24 GiB in bf16;
/// 1 GiB for a 128k vocabulary) needs no device memory, and a step moves only its tokens' rows (16 MiB for 2048
/// tokens of hidden 4096), issued on the stream like any kernel, with no host wait. The pointer libtorch's pinned
/// allocator returns is valid in kernels under unified addressing; whether it is on this machine is what
/// <see cref="SelfCheck"/> finds out at load. The reference (<see cref="Reference"/>) copies the ids to the host,
/// which waits for the device, gathers there and copies the rows over: correct anywhere, slow on a GPU, and the
/// path wherever the kernel cannot run (a table not pinned, a dtype other than bf16/fp32, rows not a multiple of 16
/// bytes, an instance made without the kernel: <see cref="FusedKernels"/> decides).
/// </summary>
public sealed unsafe class HostEmbeddingGather : FusedOp
{
    internal const string PtxFile = "embedding.ptx";
    const int Threads = 128; // kThreads in embedding.cu

    internal HostEmbeddingGather(PtxModule? module, string reason) : base(module, reason) { }

    /// <summary>Every kernel this op may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames => ["qln_embedding_rows_bf16", "qln_embedding_rows_f32"];

    /// <param name="table">(vocab, hidden) on the host (pinned, for the kernel).</param>
    /// <param name="ids">(...) int64 token ids on the device the rows go to.</param>
    /// <returns>(N, hidden) in the table's dtype on the ids' device, N = the ids' count; a row of NaN for an id
    /// outside the table on the kernel's path (the reference throws there).</returns>
    public Tensor Gather(Tensor table, Tensor ids)
    {
        if (table.dim() != 2) throw new ArgumentException($"embedding gather: a (vocab, hidden) table expected, got [{string.Join(", ", table.shape)}]");
        if (KernelFits(table, ids) && Kernel(table, ids) is { } rows)
        {
            CountKernel();
            return rows;
        }
        CountReference();
        return Reference(table, ids);
    }

    /// <summary>index_select on the host: the ids come over first (a wait for the device when they are on one).</summary>
    public static Tensor Reference(Tensor table, Tensor ids)
    {
        using var scope = NewDisposeScope();
        var onHost = ids.reshape(-1).to(table.device);
        return table.index_select(0, onHost).to(ids.device).MoveToOuterDisposeScope();
    }

    bool KernelFits(Tensor table, Tensor ids) =>
        Module is not null && ids.device_type == DeviceType.CUDA && ids.dtype == ScalarType.Int64
        && table.device_type == DeviceType.CPU && DeviceTensors.IsKernelDType(table.dtype) && table.is_contiguous()
        && table.shape[1] * table.ElementSize % 16 == 0 && table.is_pinned();

    Tensor? Kernel(Tensor table, Tensor ids)
    {
        using var scope = NewDisposeScope();
        var flat = ids.reshape(-1).contiguous();                                            // (N)
        long rows = flat.shape[0], vocab = table.shape[0], vectors = table.shape[1] * table.ElementSize / 16;
        var output = empty([rows, table.shape[1]], table.dtype, ids.device);               // (N, hidden)
        if (rows == 0) return output.MoveToOuterDisposeScope();
        if ((long)DeviceTensors.Ptr(table) % 16 != 0 || !DeviceTensors.Aligned16(output)) return null;
        if (DeviceTensors.Blocks(vectors, Threads) is not { } blocksX) return null;
        IntPtr pt = DeviceTensors.Ptr(table), pi = DeviceTensors.Ptr(flat), po = DeviceTensors.Ptr(output);
        void** args = stackalloc void*[] { &pt, &pi, &po, &rows, &vectors, &vocab };
        Launch(table.dtype == ScalarType.BFloat16 ? "qln_embedding_rows_bf16" : "qln_embedding_rows_f32",
            blocksX, (uint)Math.Min(rows, 65535), Threads, args);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Gathers four rows (one twice) of a small pinned bf16 table on <paramref name="device"/> with the kernel itself
    /// (not tallied, no fallback) and compares them with the table bit for bit: null when equal, else why not (the
    /// pinned memory not readable from kernels here, a launch failure). Runs once, where the kernels are loaded.
    /// </summary>
    internal string? SelfCheck(Device device)
    {
        if (Module is null) return Reason;
        try
        {
            using var scope = NewDisposeScope();
            var values = arange(16 * 64, ScalarType.Float32).remainder(251).reshape(16, 64).to(ScalarType.BFloat16);   // integers < 256: exact in bf16
            var table = values.pin_memory();
            if (!table.is_pinned()) return "pinned host memory not available (pin_memory gave pageable memory)";
            var ids = tensor(new long[] { 3, 0, 15, 3 }).to(device);
            if (!KernelFits(table, ids) || Kernel(table, ids) is not { } onDevice) return "the self-check's table does not fit the kernel";
            var gathered = onDevice.cpu();
            var want = values.index_select(0, ids.cpu());
            return gathered.eq(want).all().item<bool>() ? null : "the self-check's rows differ from the table (pinned host memory not readable from kernels here?)";
        }
        catch (Exception e) when (e is InvalidOperationException or ExternalException or ArgumentException)
        {
            return $"self-check failed: {e.Message.Split('\n')[0].Trim()}";
        }
    }
}
