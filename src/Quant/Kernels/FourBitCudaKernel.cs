using System.Runtime.CompilerServices;
using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The fused 4-bit dequantization kernel (nf4_dequant.cu, shipped as PTX built by scripts/build_ptx.sh and embedded
/// here): packed codes + (double-quantized) absmax -> dense bf16/fp32 weight in one pass over memory, bit for bit
/// equal to <see cref="FourBitWeight.DequantizeWithTorchOps"/> (`bench kernel` holds the two equal on the device).
/// An instance is the module loaded into one CUDA context; <see cref="KernelSelection"/> loads it once per run
/// and decides where it is used. A load failure is an exception for the selection to report, never a silent swap.
/// </summary>
public sealed unsafe class FourBitCudaKernel
{
    const string PtxFile = "nf4_dequant.ptx";
    const int Threads = 256, BlocksPerMultiprocessor = 8; // kThreads in nf4_dequant.cu; 2048 threads per SM

    readonly PtxModule _module;
    readonly int _multiprocessors;
    // Launch plans of the weights seen so far (below), by reference: a FourBitWeight is an immutable record whose
    // tensors never change, and the table lets a dropped weight (and its plan) be collected.
    readonly ConditionalWeakTable<FourBitWeight, LaunchPlan> _plans = new();

    FourBitCudaKernel(PtxModule module, int multiprocessors)
    {
        _module = module;
        _multiprocessors = multiprocessors;
    }

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
    /// The variant <see cref="Dequantize"/> uses where it applies (bf16, blocksize >= 32), else
    /// <see cref="Variant.Words"/>. Chosen by `bench kernel` on an H200 (docs/BENCHMARKS.md, "Fused kernels"): Staged and
    /// Words within 1-2% of each other on every 7B/13B shape, Vectors 30-45% slower (its 64-byte-strided stores).
    /// </summary>
    public const Variant DefaultVariant = Variant.Staged;

    /// <summary>True when this build carries the PTX (scripts/build_ptx.sh builds it).</summary>
    public static bool IsEmbedded => PtxModule.IsEmbedded(typeof(FourBitCudaKernel).Assembly, PtxFile);

    /// <summary>Where the loaded image came from ("embedded" or a path).</summary>
    public string Source => _module.Source;

    /// <summary>Every kernel <see cref="Dequantize"/> may launch (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames =>
        from v in new[] { "w", "v", "t" }
        from dq in new[] { "", "_dq" }
        from dtype in new[] { "_bf16", "_f32" }
        where !(v == "t" && dtype == "_f32")
        select "qln_dequant4_" + v + dq + dtype;

    /// <summary>
    /// Loads the PTX (<paramref name="ptxDir"/>/nf4_dequant.ptx during kernel development, else the embedded one)
    /// into the current CUDA context; libtorch must already have made it current (any CUDA tensor does). Throws with
    /// the driver's error.
    /// </summary>
    public static FourBitCudaKernel Load(string? ptxDir = null) =>
        new(PtxModule.Load(typeof(FourBitCudaKernel).Assembly, PtxFile, KernelNames, ptxDir), CudaDriver.MultiprocessorCount());

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
        return null;
    }

    /// <summary>Whether <paramref name="variant"/> can dequantize <paramref name="w"/> to <paramref name="dtype"/> (the weight is supported).</summary>
    public static bool Applies(FourBitWeight w, ScalarType dtype, Variant variant) =>
        variant == Variant.Words
        || (w.Numel % 32 == 0 && w.BlockSize >= 32 && (variant == Variant.Vectors || dtype == ScalarType.BFloat16));

    /// <summary>
    /// The dense weight of <paramref name="w"/> (on CUDA) in <paramref name="dtype"/>; the caller checked
    /// <see cref="Unsupported"/>. <paramref name="variant"/>: null = <see cref="DefaultVariant"/> where it applies,
    /// else <see cref="Variant.Words"/>; a variant asked for explicitly (`bench kernel`) must apply.
    /// </summary>
    public Tensor Dequantize(FourBitWeight w, ScalarType dtype, Variant? variant = null) => Run(w, dtype, variant, null)!;

    /// <summary>
    /// The dense weight of <paramref name="w"/> written into <paramref name="destination"/> (contiguous, 16-byte
    /// aligned, <see cref="FourBitWeight.Numel"/> elements in bf16 or fp32 on the weight's device): a slice of a larger
    /// matrix, so that weights one GEMM reads together (gate and up) are made in place, without a copy.
    /// </summary>
    public void DequantizeInto(FourBitWeight w, Tensor destination)
    {
        if (!Writable(w, destination)) throw new ArgumentException("the destination must be contiguous, 16-byte aligned, on the weight's CUDA device and hold the weight's elements");
        Run(w, destination.dtype, null, destination);
    }

    /// <summary>Whether <see cref="DequantizeInto"/> can write <paramref name="destination"/>.</summary>
    public static bool Writable(FourBitWeight w, Tensor destination) =>
        destination.is_contiguous() && destination.numel() == w.Numel && destination.device_type == DeviceType.CUDA
        && w.Packed.device_type == DeviceType.CUDA && destination.device_index == w.Packed.device_index
        && DeviceTensors.Aligned16(destination) && Unsupported(w, destination.dtype) is null;

    /// <summary>One launch writing <paramref name="into"/> (returning null), or a new tensor.</summary>
    Tensor? Run(FourBitWeight w, ScalarType dtype, Variant? variant, Tensor? into)
    {
        // A QLoRA step dequantizes every frozen weight three times (forward, recomputation, backward): 672 calls a
        // step on a 7B model, on the host's critical path in backward. The plan made on a weight's first call holds
        // what does not change between calls, so a later call is one allocation, one address and one launch.
        if (variant is null && !w.Packed.IsInvalid && _plans.TryGetValue(w, out var plan) && plan.DType == dtype)
            return Launch(plan, into);
        if (w.Packed.device_type != DeviceType.CUDA) throw new ArgumentException("the CUDA kernel dequantizes CUDA tensors only");
        if (Unsupported(w, dtype) is { } why) throw new ArgumentException($"the CUDA kernel cannot dequantize this weight: {why}");
        var v = variant ?? DefaultVariant;
        if (!Applies(w, dtype, v))
        {
            if (variant is not null) throw new ArgumentException($"variant {v} does not apply to this weight");
            v = Variant.Words; // the general one, as fast as Staged (bench kernel, H200)
        }
        var device = w.Packed.device;
        bool dq = w.Scales is DoubleQuantizedScales;
        using var scope = torch.NewDisposeScope();
        // direct: every tensor the kernel reads is the weight's own storage (no contiguous/aligned/converted copy),
        // so its address is the weight's for as long as the weight lives and a plan may keep it.
        bool direct = w.Packed.is_contiguous();
        var packed = w.Packed.contiguous();
        if (!DeviceTensors.Aligned16(packed)) { packed = packed.clone(); direct = false; } // the kernels read 16-byte vectors; a fresh allocation is aligned
        var codebook = CodeTables.Float(FourBitCodebook.Name(w.Type) + "/values", device, () => FourBitCodebook.Values(w.Type));
        Tensor? absmax = null, absmaxQ = null, nestedAbsmax = null, nestedCode = null;
        float offset = 0f;
        int log2Nested = 0;
        switch (w.Scales)
        {
            case PlainScales p:
                absmax = OnDevice(p.Absmax, ScalarType.Float32, device, ref direct);
                break;
            case DoubleQuantizedScales d:
                absmaxQ = OnDevice(d.Codes, ScalarType.Byte, device, ref direct);
                nestedAbsmax = OnDevice(d.NestedAbsmax, ScalarType.Float32, device, ref direct);
                nestedCode = CodeTables.Float("dynamic/values", device, DynamicMap.Values); // cached for the run: a stable address
                offset = d.Offset;
                log2Nested = System.Numerics.BitOperations.Log2((uint)d.NestedBlockSize);
                break;
        }
        // Work units: 4-byte words (8 weights) or 16-byte vectors (32 weights) of codes; a warp takes 128 words or 64
        // vectors per step (kWords, kVecs in nf4_dequant.cu).
        long units = v == Variant.Words ? w.Numel / 8 : w.Numel / 32;
        long unitsPerBlockStep = (Threads / 32) * (v == Variant.Words ? 128 : 64);
        long wanted = (units + unitsPerBlockStep - 1) / unitsPerBlockStep;
        string name = "qln_dequant4_" + (v switch { Variant.Words => "w", Variant.Vectors => "v", _ => "t" })
            + (dq ? "_dq" : "") + (dtype == ScalarType.BFloat16 ? "_bf16" : "_f32");
        var made = new LaunchPlan(
            Packed: DeviceTensors.Ptr(packed), Absmax: dq ? IntPtr.Zero : DeviceTensors.Ptr(absmax!),
            AbsmaxCodes: dq ? DeviceTensors.Ptr(absmaxQ!) : IntPtr.Zero, NestedAbsmax: dq ? DeviceTensors.Ptr(nestedAbsmax!) : IntPtr.Zero,
            NestedCode: dq ? DeviceTensors.Ptr(nestedCode!) : IntPtr.Zero, Codebook: DeviceTensors.Ptr(codebook), Offset: offset,
            Units: units, Log2Block: System.Numerics.BitOperations.Log2((uint)w.BlockSize), Log2Nested: log2Nested,
            Grid: (uint)Math.Max(1, Math.Min(wanted, (long)_multiprocessors * BlocksPerMultiprocessor)),
            Function: _module.Function(name), Shape: w.Shape, DType: dtype, Device: device);
        if (variant is null && direct) _plans.AddOrUpdate(w, made);
        // The copies, if any, are read by the launch before they are freed (stream order).
        return into is null ? Launch(made, null)!.MoveToOuterDisposeScope() : Launch(made, into);
    }

    /// <summary>Everything a launch for one weight needs but the output: the addresses of its codes, scales and the
    /// code tables, the kernel and its grid.</summary>
    sealed record LaunchPlan(IntPtr Packed, IntPtr Absmax, IntPtr AbsmaxCodes, IntPtr NestedAbsmax, IntPtr NestedCode,
        IntPtr Codebook, float Offset, long Units, int Log2Block, int Log2Nested, uint Grid, IntPtr Function,
        long[] Shape, ScalarType DType, Device Device);

    /// <summary>The dense weight written by one launch of the plan's kernel on stream 0: into
    /// <paramref name="into"/> (returning null), or into a new tensor (Shape, contiguous) returned.</summary>
    Tensor? Launch(LaunchPlan p, Tensor? into)
    {
        var output = into ?? torch.empty(p.Shape, p.DType, p.Device);              // (out, in)
        IntPtr pPacked = p.Packed, pAbsmax = p.Absmax, pAq = p.AbsmaxCodes, pNa = p.NestedAbsmax, pNc = p.NestedCode;
        IntPtr pCb = p.Codebook, pOut = DeviceTensors.Ptr(output);
        float offset = p.Offset;
        long units = p.Units;
        int log2Block = p.Log2Block, log2Nested = p.Log2Nested;
        void** args = stackalloc void*[11];
        args[0] = &pPacked; args[1] = &pAbsmax; args[2] = &pAq; args[3] = &pNa; args[4] = &pNc; args[5] = &offset;
        args[6] = &pCb; args[7] = &pOut; args[8] = &units; args[9] = &log2Block; args[10] = &log2Nested;
        CudaDriver.Launch(_module.Context, p.Function, p.Grid, 1, Threads, args);
        return into is null ? output : null;
    }

    /// <summary>The tensor itself when it already has the dtype/device and is contiguous (no copy), else a converted copy.</summary>
    static Tensor OnDevice(Tensor t, ScalarType dtype, Device device, ref bool direct)
    {
        if (t.dtype == dtype && t.device_type == device.type && t.device_index == device.index && t.is_contiguous()) return t.alias();
        direct = false;
        return t.to(dtype, device).contiguous();
    }
}
