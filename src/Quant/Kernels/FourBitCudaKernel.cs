using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The fused 4-bit dequantization kernel (nf4_dequant.cu, shipped as PTX built by scripts/build_ptx.sh and
/// embedded here): packed codes + (double-quantized) absmax -> dense bf16/fp32 weight in one pass over memory. It is
/// the fast path on CUDA only; the torch-op path stays the reference (and the CPU path), and `bench kernel` holds
/// the two equal bit for bit. Selected in one place (<see cref="TryDequantize"/>); set
/// QLORANET_DISABLE_CUDA_KERNELS=1 to compare.
/// </summary>
public static unsafe class FourBitCudaKernel
{
    static readonly PtxModule Ptx = new(typeof(FourBitCudaKernel).Assembly, "nf4_dequant.ptx");

    /// <summary>How a kernel moves the bytes (nf4_dequant.cu's header compares them); all compute the same values.</summary>
    public enum Variant
    {
        /// <summary>4-byte words of codes per lane, 16-byte stores: any blocksize >= 8.</summary>
        Words,
        /// <summary>16-byte vectors of codes per lane, four 16-byte stores each: blocksize >= 32.</summary>
        Vectors,
        /// <summary>As <see cref="Vectors"/>, stores staged through shared memory: bf16 only.</summary>
        Staged,
    }

    /// <summary>
    /// The variant <see cref="TryDequantize"/> uses where it applies (bf16, blocksize >= 32), else
    /// <see cref="Variant.Words"/>. Chosen by `bench kernel` on an H200 (docs/BENCHMARKS.md, "Fused kernels"): Staged and
    /// Words within 1-2% of each other on every 7B/13B shape, Vectors 30-45% slower (its 64-byte-strided stores).
    /// </summary>
    public const Variant DefaultVariant = Variant.Staged;

    const int Threads = 256, BlocksPerMultiprocessor = 8; // kThreads in nf4_dequant.cu; 2048 threads per SM

    /// <summary>Why the kernel cannot run here (null when it can), for logs and `info`.</summary>
    public static string? Unavailable => Ptx.Unavailable;

    /// <summary>Every kernel <see cref="TryDequantize"/> may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames =>
        from v in new[] { "w", "v", "t" }
        from dq in new[] { "", "_dq" }
        from dtype in new[] { "_bf16", "_f32" }
        where !(v == "t" && dtype == "_f32")
        select "qln_dequant4_" + v + dq + dtype;

    /// <summary>
    /// Dequantizes on the GPU when possible; returns null (caller uses the torch-op path) when the tensors are not on
    /// CUDA, the shape does not fit the kernel, or the kernel is unavailable.
    /// </summary>
    /// <param name="packed">uint8 codes, two per byte, numel/2 bytes (contiguous).</param>
    /// <param name="absmax">fp32 per-block absmax (no double quantization), else null.</param>
    /// <param name="absmaxQ">uint8 double-quantized absmax codes, else null.</param>
    /// <param name="nestedAbsmax">fp32 scale per nested block of absmax codes.</param>
    /// <param name="nestedCode">fp32 [256] dynamic map for the absmax codes.</param>
    /// <param name="variant">null = <see cref="DefaultVariant"/>, falling back to <see cref="Variant.Words"/> where it does not apply.</param>
    public static Tensor? TryDequantize(Tensor packed, Tensor? absmax, Tensor? absmaxQ, Tensor? nestedAbsmax, Tensor? nestedCode,
        float offset, Tensor codebook, long numel, int blocksize, int nestedBlocksize, ScalarType dtype, Variant? variant = null)
    {
        if (packed.device_type != DeviceType.CUDA || Unavailable != null) return null;
        if (dtype != ScalarType.BFloat16 && dtype != ScalarType.Float32) return null;
        if (numel % 8 != 0 || blocksize < 8 || (blocksize & (blocksize - 1)) != 0) return null;
        bool dq = absmaxQ is not null;
        if (dq && (nestedAbsmax is null || nestedCode is null || (nestedBlocksize & (nestedBlocksize - 1)) != 0)) return null;
        if (!packed.is_contiguous() || !DeviceTensors.Aligned16(packed)) return null;

        var v = variant ?? DefaultVariant;
        bool applies = v == Variant.Words
            || (numel % 32 == 0 && blocksize >= 32 && (v == Variant.Vectors || dtype == ScalarType.BFloat16));
        if (!applies)
        {
            if (variant is not null) return null; // asked for explicitly (bench kernel)
            v = Variant.Words;                   // the general one, as fast as Staged (bench kernel, H200)
        }
        string name = "qln_dequant4_" + (v switch { Variant.Words => "w", Variant.Vectors => "v", _ => "t" })
            + (dq ? "_dq" : "") + (dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");
        if (Ptx.TryFunction(name) is not { } fn) return null;

        var device = packed.device;
        using var scope = torch.NewDisposeScope();
        var cb = OnDevice(codebook, ScalarType.Float32, device)!;
        var am = OnDevice(absmax, ScalarType.Float32, device);
        var aq = OnDevice(absmaxQ, ScalarType.Byte, device);
        var na = OnDevice(nestedAbsmax, ScalarType.Float32, device);
        var nc = OnDevice(nestedCode, ScalarType.Float32, device);
        var output = torch.empty(new[] { numel }, dtype, device);

        IntPtr pPacked = DeviceTensors.Ptr(packed), pAbsmax = dq ? IntPtr.Zero : DeviceTensors.Ptr(am!);
        IntPtr pAq = dq ? DeviceTensors.Ptr(aq!) : IntPtr.Zero, pNa = dq ? DeviceTensors.Ptr(na!) : IntPtr.Zero;
        IntPtr pNc = dq ? DeviceTensors.Ptr(nc!) : IntPtr.Zero, pCb = DeviceTensors.Ptr(cb), pOut = DeviceTensors.Ptr(output);
        // Work units: 4-byte words (8 weights) or 16-byte vectors (32 weights) of codes; a warp takes 128 words or 64
        // vectors per step (kWords, kVecs in nf4_dequant.cu).
        long units = v == Variant.Words ? numel / 8 : numel / 32;
        long unitsPerBlockStep = (Threads / 32) * (v == Variant.Words ? 128 : 64);
        int log2Block = System.Numerics.BitOperations.Log2((uint)blocksize);
        int log2Nested = dq ? System.Numerics.BitOperations.Log2((uint)nestedBlocksize) : 0;
        long wanted = (units + unitsPerBlockStep - 1) / unitsPerBlockStep;
        uint grid = (uint)Math.Max(1, Math.Min(wanted, (long)CudaDriver.MultiprocessorCount() * BlocksPerMultiprocessor));
        void** args = stackalloc void*[11];
        args[0] = &pPacked; args[1] = &pAbsmax; args[2] = &pAq; args[3] = &pNa; args[4] = &pNc; args[5] = &offset;
        args[6] = &pCb; args[7] = &pOut; args[8] = &units; args[9] = &log2Block; args[10] = &log2Nested;
        CudaDriver.Launch(fn, grid, 1, Threads, args);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>The tensor itself when it already has the dtype/device and is contiguous (no copy), else a converted copy.</summary>
    static Tensor? OnDevice(Tensor? t, ScalarType dtype, Device device)
    {
        if (t is null) return null;
        if (t.dtype == dtype && t.device_type == device.type && t.device_index == device.index && t.is_contiguous()) return t.alias();
        return t.to(dtype, device).contiguous();
    }
}
