using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The fused 4-bit dequantization kernel (Kernels/nf4_dequant.cu, shipped as PTX built once with nvcc and embedded
/// here): packed codes + (double-quantized) absmax -> dense bf16/fp32 weight in one pass over memory, bit for bit
/// equal to <see cref="FourBitWeight.DequantizeWithTorchOps"/> (a GPU test and `bench kernel` hold the two equal).
/// An instance is the module loaded into one CUDA context; <see cref="KernelSelection"/> loads it once per run
/// and decides where it is used. A load failure is an exception for the selection to report, never a silent swap.
/// </summary>
public sealed unsafe class FourBitCudaKernel
{
    const string PtxResource = "QLoraNet.Quant.Kernels.nf4_dequant.ptx";
    const int Threads = 256, WordsPerThread = 4; // kThreads, kWordsPerThread in nf4_dequant.cu

    readonly IntPtr[] _functions; // f32, bf16, dq_f32, dq_bf16

    FourBitCudaKernel(IntPtr[] functions) => _functions = functions;

    /// <summary>True when this build carries the PTX (scripts/gpu/build_ptx.sh builds it).</summary>
    public static bool IsEmbedded => typeof(FourBitCudaKernel).Assembly.GetManifestResourceInfo(PtxResource) != null;

    /// <summary>
    /// Loads the PTX (the embedded one, or <paramref name="ptxPath"/> during kernel development) into the current CUDA
    /// context; libtorch must already have made it current (any CUDA tensor does). Throws with the driver's error.
    /// </summary>
    public static FourBitCudaKernel Load(string? ptxPath = null)
    {
        byte[] text;
        if (ptxPath != null) text = File.ReadAllBytes(ptxPath);
        else
        {
            using var s = typeof(FourBitCudaKernel).Assembly.GetManifestResourceStream(PtxResource)
                ?? throw new InvalidOperationException("PTX not embedded in this build (scripts/gpu/build_ptx.sh builds it)");
            text = new byte[s.Length];
            s.ReadExactly(text);
        }
        var ptx = new byte[text.Length + 1]; // the driver wants a NUL-terminated image
        text.CopyTo(ptx, 0);
        CudaDriver.CurrentContext();
        var module = CudaDriver.LoadModule(ptx);
        return new FourBitCudaKernel(
        [
            CudaDriver.GetFunction(module, "qln_dequant4_f32"), CudaDriver.GetFunction(module, "qln_dequant4_bf16"),
            CudaDriver.GetFunction(module, "qln_dequant4_dq_f32"), CudaDriver.GetFunction(module, "qln_dequant4_dq_bf16"),
        ]);
    }

    /// <summary>
    /// Why this weight cannot go through the kernel (null when it can): the output must be bf16 or fp32, and one
    /// 32-bit word of codes (8 weights) must lie within one quantization block, so numel % 8 == 0 and the block and
    /// nested block sizes are powers of two, the block at least 8 (every <see cref="FourBitFormat"/> is).
    /// </summary>
    public static string? Unsupported(FourBitWeight w, ScalarType dtype)
    {
        if (dtype != ScalarType.BFloat16 && dtype != ScalarType.Float32) return $"output dtype {dtype} (the kernel writes bf16 or fp32)";
        if (w.Numel % 8 != 0) return $"{w.Numel} weights, not a multiple of 8";
        if (w.BlockSize < 8 || (w.BlockSize & (w.BlockSize - 1)) != 0) return $"blocksize {w.BlockSize}";
        if (w.Scales is DoubleQuantizedScales d && (d.NestedBlockSize & (d.NestedBlockSize - 1)) != 0) return $"nested blocksize {d.NestedBlockSize}";
        if ((w.Numel / 8 + Threads * WordsPerThread - 1) / (Threads * WordsPerThread) > int.MaxValue) return "more blocks than one launch holds";
        return null;
    }

    /// <summary>The dense weight of <paramref name="w"/> (on CUDA) in <paramref name="dtype"/>; the caller checked <see cref="Unsupported"/>.</summary>
    public Tensor Dequantize(FourBitWeight w, ScalarType dtype)
    {
        if (w.Packed.device_type != DeviceType.CUDA) throw new ArgumentException("the CUDA kernel dequantizes CUDA tensors only");
        if (Unsupported(w, dtype) is { } why) throw new ArgumentException($"the CUDA kernel cannot dequantize this weight: {why}");
        var device = w.Packed.device;
        bool dq = w.Scales is DoubleQuantizedScales;
        using var scope = torch.NewDisposeScope();
        var packed = w.Packed.contiguous();
        if ((long)CudaDriver.DataPointer(packed) % 4 != 0)
            throw new InvalidOperationException("packed 4-bit codes are not 4-byte aligned; the kernel reads them as 32-bit words");
        var codebook = CodeTables.Float(FourBitCodebook.Name(w.Type) + "/values", device, () => FourBitCodebook.Values(w.Type));
        Tensor? absmax = null, absmaxQ = null, nestedAbsmax = null, nestedCode = null;
        float offset = 0f;
        int log2Nested = 0;
        switch (w.Scales)
        {
            case PlainScales p:
                absmax = p.Absmax.to(ScalarType.Float32, device).contiguous();
                break;
            case DoubleQuantizedScales d:
                absmaxQ = d.Codes.to(ScalarType.Byte, device).contiguous();
                nestedAbsmax = d.NestedAbsmax.to(ScalarType.Float32, device).contiguous();
                nestedCode = CodeTables.Float("dynamic/values", device, DynamicMap.Values);
                offset = d.Offset;
                log2Nested = System.Numerics.BitOperations.Log2((uint)d.NestedBlockSize);
                break;
        }
        var output = torch.empty([w.Numel], dtype, device);

        IntPtr pPacked = CudaDriver.DataPointer(packed), pAbsmax = dq ? IntPtr.Zero : CudaDriver.DataPointer(absmax!);
        IntPtr pAq = dq ? CudaDriver.DataPointer(absmaxQ!) : IntPtr.Zero, pNa = dq ? CudaDriver.DataPointer(nestedAbsmax!) : IntPtr.Zero;
        IntPtr pNc = dq ? CudaDriver.DataPointer(nestedCode!) : IntPtr.Zero, pCb = CudaDriver.DataPointer(codebook), pOut = CudaDriver.DataPointer(output);
        long nwords = w.Numel / 8; // one 4-byte word of packed codes = 8 weights
        int log2Block = System.Numerics.BitOperations.Log2((uint)w.BlockSize);
        void** args = stackalloc void*[11];
        args[0] = &pPacked; args[1] = &pAbsmax; args[2] = &pAq; args[3] = &pNa; args[4] = &pNc; args[5] = &offset;
        args[6] = &pCb; args[7] = &pOut; args[8] = &nwords; args[9] = &log2Block; args[10] = &log2Nested;
        long grid = (nwords + Threads * WordsPerThread - 1) / (Threads * WordsPerThread);
        CudaDriver.Launch(_functions[(dq ? 2 : 0) + (dtype == ScalarType.BFloat16 ? 1 : 0)], (uint)grid, Threads, args);
        return output.view(w.Shape).MoveToOuterDisposeScope();
    }
}
