using System.Runtime.InteropServices;

namespace QLoraNet.Kernels.Cuda;

/// <summary>
/// cuBLAS's mixed-precision GEMM, bf16 (or fp16) inputs into an fp32 C with fp32 accumulation
/// (<c>cublasGemmEx</c>, <c>cublasGemmStridedBatchedEx</c>; cuBLAS docs, "cublasGemmEx": Atype = Btype = CUDA_R_16BF,
/// Ctype = CUDA_R_32F, CUBLAS_COMPUTE_32F), which torch offers as <c>mm(..., out_dtype=float32)</c> and TorchSharp does
/// not bind. The library is the one libtorch already loaded (opened by its SONAME, so the process keeps one copy);
/// the entry points are looked up once as function pointers, with no native build of our own.
/// One handle per device, on stream 0 (the legacy default stream, libtorch's current stream under TorchSharp, as
/// <see cref="CudaDriver"/> launches), with a workspace of <see cref="WorkspaceBytes"/> that is a torch tensor, so the
/// caching allocator accounts for it. An instance is made by <see cref="TryLoad"/>; the op that owns it
/// (<see cref="FusedWeightGradient"/>) lives as long as the run's kernel selection.
/// </summary>
public sealed unsafe class Cublas
{
    /// <summary>Bytes of workspace per handle: split-K partial sums of the LoRA factor gradients ((r, in) = 16 x 4096
    /// fp32, a few splits) fit; cuBLAS without one would allocate its own default pool outside torch's allocator.</summary>
    public const long WorkspaceBytes = 4L << 20;

    const int OpN = 0, OpT = 1;                      // cublasOperation_t
    const int R32F = 0, R16F = 2, R16BF = 14;        // cudaDataType_t
    const int Compute32F = 68;                       // cublasComputeType_t CUBLAS_COMPUTE_32F
    const int GemmDefault = -1;                      // cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT

    readonly delegate* unmanaged<IntPtr*, int> _create;
    readonly delegate* unmanaged<IntPtr, IntPtr, int> _setStream;
    readonly delegate* unmanaged<IntPtr, void*, nuint, int> _setWorkspace;
    readonly delegate* unmanaged<int, IntPtr> _statusString;
    readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, void*, int, int, void*, int, int, float*, void*, int, int, int, int, int> _gemmEx;
    readonly delegate* unmanaged<IntPtr, int, int, int, int, int, float*, void*, int, int, long, void*, int, int, long, float*, void*, int, int, long, int, int, int, int> _gemmStridedBatchedEx;
    readonly Dictionary<int, (IntPtr Handle, IntPtr Context, TorchSharp.torch.Tensor Workspace)> _handles = [];
    readonly object _lock = new();

    /// <summary>The file the library was opened as (for the report).</summary>
    public string Library { get; }

    Cublas(IntPtr lib, string name)
    {
        Library = name;
        _create = (delegate* unmanaged<IntPtr*, int>)NativeLibrary.GetExport(lib, "cublasCreate_v2");
        _setStream = (delegate* unmanaged<IntPtr, IntPtr, int>)NativeLibrary.GetExport(lib, "cublasSetStream_v2");
        _setWorkspace = (delegate* unmanaged<IntPtr, void*, nuint, int>)NativeLibrary.GetExport(lib, "cublasSetWorkspace_v2");
        _statusString = (delegate* unmanaged<int, IntPtr>)NativeLibrary.GetExport(lib, "cublasGetStatusString");
        _gemmEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, void*, int, int, void*, int, int, float*, void*, int, int, int, int, int>)
            NativeLibrary.GetExport(lib, "cublasGemmEx");
        _gemmStridedBatchedEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, float*, void*, int, int, long, void*, int, int, long, float*, void*, int, int, long, int, int, int, int>)
            NativeLibrary.GetExport(lib, "cublasGemmStridedBatchedEx");
    }

    /// <summary>The library names tried, newest first: libtorch ships the cuBLAS of the CUDA it was built for.</summary>
    static readonly string[] Names = OperatingSystem.IsWindows()
        ? ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"]
        : ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"];

    /// <summary>cuBLAS with every entry point used here, or null and why not.</summary>
    public static (Cublas? Cublas, string Reason) TryLoad()
    {
        foreach (var name in Names)
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            try
            {
                return (new Cublas(lib, name), name);
            }
            catch (EntryPointNotFoundException e)
            {
                return (null, $"{name} lacks {e.Message}");
            }
        }
        return (null, $"no cuBLAS library found ({string.Join(", ", Names)})");
    }

    /// <summary>One operand as cuBLAS reads it: its element pointer, whether cuBLAS must transpose the column-major
    /// matrix it sees, and the leading dimension.</summary>
    public readonly record struct Operand(IntPtr Data, bool Transposed, long Ld);

    /// <summary>
    /// How cuBLAS sees a 2-D tensor T (rows, cols) that it must read as Tᵀ in column-major terms (every operand of
    /// <see cref="Gemm"/> is such, see there): row-major T (unit column stride) is Tᵀ column-major with ld = its row
    /// stride (no transpose); column-major T (unit row stride, a transposed view) is T with ld = its column stride,
    /// transposed by cuBLAS. Null when neither stride is 1 (cuBLAS cannot read it in place).
    /// </summary>
    public static Operand? AsTransposed(TorchSharp.torch.Tensor t)
    {
        if (t.dim() != 2) return null;
        long rows = t.size(0), cols = t.size(1), s0 = t.stride(0), s1 = t.stride(1);
        if (s1 == 1 && s0 >= Math.Max(1, cols)) return new(CudaDriver.DataPointer(t), false, s0);
        if (s0 == 1 && s1 >= Math.Max(1, rows)) return new(CudaDriver.DataPointer(t), true, s1);
        return null;
    }

    /// <summary>cudaDataType of a 16-bit input dtype, or null.</summary>
    public static int? InputType(TorchSharp.torch.ScalarType dtype) => dtype switch
    {
        TorchSharp.torch.ScalarType.BFloat16 => R16BF,
        TorchSharp.torch.ScalarType.Float16 => R16F,
        _ => null,
    };

    /// <summary>
    /// C (m, n, fp32, row stride ldc, unit column stride) = alpha · P Q + beta · C for P (m, k) and Q (k, n) of
    /// <paramref name="inputType"/>, over <paramref name="batch"/> problems whose P, Q and C start
    /// <paramref name="strideP"/>, <paramref name="strideQ"/> and <paramref name="strideC"/> elements apart (batch 1:
    /// strides unused). Row-major C is Cᵀ to column-major cuBLAS, and Cᵀ = Qᵀ Pᵀ: cuBLAS's A is Q, its B is P, each
    /// given as <see cref="AsTransposed"/> describes. On <paramref name="device"/>'s handle, stream 0.
    /// </summary>
    public void Gemm(int device, long m, long n, long k, float alpha, Operand p, Operand q, int inputType, float beta,
        IntPtr c, long ldc, int batch = 1, long strideP = 0, long strideQ = 0, long strideC = 0)
    {
        var (handle, context) = HandleFor(device);
        // cuBLAS runs on the device current on this thread: the handle's, pushed for the call where another is current.
        bool pushed = CudaDriver.PushContextIfOther(context);
        int rc;
        try
        {
            if (batch == 1)
                rc = _gemmEx(handle, q.Transposed ? OpT : OpN, p.Transposed ? OpT : OpN, checked((int)n), checked((int)m), checked((int)k),
                    &alpha, (void*)q.Data, inputType, checked((int)q.Ld), (void*)p.Data, inputType, checked((int)p.Ld),
                    &beta, (void*)c, R32F, checked((int)ldc), Compute32F, GemmDefault);
            else
                rc = _gemmStridedBatchedEx(handle, q.Transposed ? OpT : OpN, p.Transposed ? OpT : OpN, checked((int)n), checked((int)m), checked((int)k),
                    &alpha, (void*)q.Data, inputType, checked((int)q.Ld), strideQ, (void*)p.Data, inputType, checked((int)p.Ld), strideP,
                    &beta, (void*)c, R32F, checked((int)ldc), strideC, batch, Compute32F, GemmDefault);
        }
        finally
        {
            if (pushed) CudaDriver.PopContext();
        }
        Check(rc, batch == 1 ? "cublasGemmEx" : "cublasGemmStridedBatchedEx");
    }

    /// <summary>The handle of <paramref name="device"/>, made on first use there (with its workspace) while that
    /// device's context is current on this thread, as cuBLAS binds a handle to the current device.</summary>
    (IntPtr Handle, IntPtr Context) HandleFor(int device)
    {
        lock (_lock)
        {
            if (_handles.TryGetValue(device, out var h)) return (h.Handle, h.Context);
            var context = CudaDriver.RetainPrimaryContext(device);
            bool pushed = CudaDriver.PushContextIfOther(context);
            try
            {
                var made = MakeHandle(device);
                _handles[device] = (made.Handle, context, made.Workspace);
                return (made.Handle, context);
            }
            finally
            {
                if (pushed) CudaDriver.PopContext();
            }
        }
    }

    (IntPtr Handle, TorchSharp.torch.Tensor Workspace) MakeHandle(int device)
    {
        // Kept for the run (the handle's lifetime): outside every dispose scope.
        var workspace = TorchSharp.torch.empty(WorkspaceBytes, TorchSharp.torch.ScalarType.Byte, new TorchSharp.torch.Device(TorchSharp.DeviceType.CUDA, device));
        workspace.DetachFromDisposeScope();
        IntPtr handle;
        Check(_create(&handle), "cublasCreate");
        Check(_setStream(handle, IntPtr.Zero), "cublasSetStream");
        Check(_setWorkspace(handle, (void*)CudaDriver.DataPointer(workspace), (nuint)WorkspaceBytes), "cublasSetWorkspace");
        return (handle, workspace);
    }

    void Check(int status, string what)
    {
        if (status == 0) return;
        var text = _statusString(status);
        throw new InvalidOperationException($"{what} failed: {(text == IntPtr.Zero ? status.ToString() : Marshal.PtrToStringAnsi(text))}");
    }
}
