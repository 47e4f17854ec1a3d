using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The fused 4-bit dequantization kernel (nf4_dequant.cu, shipped as PTX built once with nvcc and embedded here):
/// packed codes + (double-quantized) absmax -> dense bf16/fp32 weight in one pass over memory. It is the fast path
/// on CUDA only; the torch-op path stays the reference (and the CPU path), and a GPU test holds the two equal bit
/// for bit. Selected in one place (<see cref="TryDequantize"/>); set QLORANET_DISABLE_CUDA_KERNELS=1 to compare.
/// </summary>
public static unsafe class FourBitCudaKernel
{
    const string PtxResource = "QLoraNet.Quant.Kernels.nf4_dequant.ptx";
    static readonly object Gate = new();
    static readonly Dictionary<IntPtr, IntPtr[]> FunctionsByContext = new();
    static string? _unavailable;

    /// <summary>Why the kernel cannot run here (null when it can), for logs and `info`.</summary>
    public static string? Unavailable
    {
        get
        {
            if (Environment.GetEnvironmentVariable("QLORANET_DISABLE_CUDA_KERNELS") == "1") return "disabled by QLORANET_DISABLE_CUDA_KERNELS=1";
            if (_unavailable != null) return _unavailable;
            if (typeof(FourBitCudaKernel).Assembly.GetManifestResourceInfo(PtxResource) == null
                && Environment.GetEnvironmentVariable("QLORANET_PTX_PATH") == null)
                return _unavailable = "PTX not embedded in this build (scripts/gpu/build_ptx.sh builds it)";
            return null;
        }
    }

    /// <summary>
    /// Dequantizes on the GPU when possible; returns null (caller uses the torch-op path) when the tensors are not on
    /// CUDA, the shape does not fit the kernel's 32-weight chunks, or the kernel is unavailable.
    /// </summary>
    /// <param name="packed">uint8 codes, two per byte, numel/2 bytes (contiguous).</param>
    /// <param name="absmax">fp32 per-block absmax (no double quantization), else null.</param>
    /// <param name="absmaxQ">uint8 double-quantized absmax codes, else null.</param>
    /// <param name="nestedAbsmax">fp32 scale per nested block of absmax codes.</param>
    /// <param name="nestedCode">fp32 [256] dynamic map for the absmax codes.</param>
    public static Tensor? TryDequantize(Tensor packed, Tensor? absmax, Tensor? absmaxQ, Tensor? nestedAbsmax, Tensor? nestedCode,
        float offset, Tensor codebook, long numel, int blocksize, int nestedBlocksize, ScalarType dtype)
    {
        if (packed.device_type != DeviceType.CUDA || Unavailable != null) return null;
        if (dtype != ScalarType.BFloat16 && dtype != ScalarType.Float32) return null;
        if (numel % 8 != 0 || blocksize < 8 || (blocksize & (blocksize - 1)) != 0) return null;
        bool dq = absmaxQ is not null;
        if (dq && (nestedAbsmax is null || nestedCode is null || (nestedBlocksize & (nestedBlocksize - 1)) != 0)) return null;
        if (!packed.is_contiguous() || (long)CudaDriver.DataPointer(packed) % 4 != 0) return null;

        IntPtr fn;
        try
        {
            fn = Function(dq, dtype == ScalarType.BFloat16);
        }
        catch (Exception e)
        {
            _unavailable = e.Message;
            return null;
        }

        var device = packed.device;
        using var scope = torch.NewDisposeScope();
        var cb = OnDevice(codebook, ScalarType.Float32, device)!;
        var am = OnDevice(absmax, ScalarType.Float32, device);
        var aq = OnDevice(absmaxQ, ScalarType.Byte, device);
        var na = OnDevice(nestedAbsmax, ScalarType.Float32, device);
        var nc = OnDevice(nestedCode, ScalarType.Float32, device);
        var output = torch.empty(new[] { numel }, dtype, device);

        IntPtr pPacked = CudaDriver.DataPointer(packed), pAbsmax = dq ? IntPtr.Zero : CudaDriver.DataPointer(am!);
        IntPtr pAq = dq ? CudaDriver.DataPointer(aq!) : IntPtr.Zero, pNa = dq ? CudaDriver.DataPointer(na!) : IntPtr.Zero;
        IntPtr pNc = dq ? CudaDriver.DataPointer(nc!) : IntPtr.Zero, pCb = CudaDriver.DataPointer(cb), pOut = CudaDriver.DataPointer(output);
        long nwords = numel / 8; // one 4-byte word of packed codes = 8 weights
        int log2Block = System.Numerics.BitOperations.Log2((uint)blocksize);
        int log2Nested = dq ? System.Numerics.BitOperations.Log2((uint)nestedBlocksize) : 0;
        void** args = stackalloc void*[11];
        args[0] = &pPacked; args[1] = &pAbsmax; args[2] = &pAq; args[3] = &pNa; args[4] = &pNc; args[5] = &offset;
        args[6] = &pCb; args[7] = &pOut; args[8] = &nwords; args[9] = &log2Block; args[10] = &log2Nested;
        const int threads = 256, wordsPerThread = 4; // kThreads, kWordsPerThread in nf4_dequant.cu
        long grid = (nwords + threads * wordsPerThread - 1) / (threads * wordsPerThread);
        if (grid > int.MaxValue) return null;
        CudaDriver.Launch(fn, (uint)grid, threads, args);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>The tensor itself when it already has the dtype/device and is contiguous (no copy), else a converted copy.</summary>
    static Tensor? OnDevice(Tensor? t, ScalarType dtype, Device device)
    {
        if (t is null) return null;
        if (t.dtype == dtype && t.device_type == device.type && t.device_index == device.index && t.is_contiguous()) return t.alias();
        return t.to(dtype, device).contiguous();
    }

    static IntPtr Function(bool dq, bool bf16)
    {
        lock (Gate)
        {
            var ctx = CudaDriver.CurrentContext();
            if (!FunctionsByContext.TryGetValue(ctx, out var fns))
            {
                byte[] text;
                string? overridePath = Environment.GetEnvironmentVariable("QLORANET_PTX_PATH"); // kernel development
                if (overridePath != null) text = File.ReadAllBytes(overridePath);
                else
                {
                    using var s = typeof(FourBitCudaKernel).Assembly.GetManifestResourceStream(PtxResource)!;
                    text = new byte[s.Length];
                    s.ReadExactly(text);
                }
                var ptx = new byte[text.Length + 1]; // the driver wants a NUL-terminated image
                text.CopyTo(ptx, 0);
                var module = CudaDriver.LoadModule(ptx);
                fns = new[]
                {
                    CudaDriver.GetFunction(module, "qln_dequant4_f32"), CudaDriver.GetFunction(module, "qln_dequant4_bf16"),
                    CudaDriver.GetFunction(module, "qln_dequant4_dq_f32"), CudaDriver.GetFunction(module, "qln_dequant4_dq_bf16"),
                };
                FunctionsByContext[ctx] = fns;
            }
            return fns[(dq ? 2 : 0) + (bf16 ? 1 : 0)];
        }
    }
}
