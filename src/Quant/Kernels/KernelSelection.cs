using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>Which code turns packed 4-bit weights back into dense ones.</summary>
public enum FourBitDequantPath
{
    /// <summary>The fused SIMD loop over packed codes on the CPU (<see cref="CpuFourBitKernel"/>).</summary>
    CpuSimd,

    /// <summary>The fused CUDA kernel (<see cref="FourBitCudaKernel"/>).</summary>
    CudaPtx,

    /// <summary>Device-agnostic torch ops (<see cref="FourBitWeight.DequantizeWithTorchOps"/>): the reference the others equal bit for bit.</summary>
    TorchOps,
}

/// <summary>What the caller asks of kernel selection: switches a CLI reads from its environment.</summary>
/// <param name="DisableCuda">use torch ops instead of our CUDA kernels (to compare).</param>
/// <param name="PtxDir">load each kernel's PTX (nf4_dequant.ptx, rms_norm.ptx, ...) from this directory where it holds
/// one, instead of the embedded image (kernel development).</param>
/// <param name="TorchWeightGradients">LoRA's factor gradients through the torch-op reference (a bf16 product, then an
/// fp32 add) instead of cuBLAS's GEMM into the fp32 .grad (Kernels.FusedWeightGradient): to compare the two.</param>
public sealed record KernelOptions(bool DisableCuda = false, string? PtxDir = null, bool TorchWeightGradients = false);

/// <summary>
/// The one place that decides which kernels run on a device, made once by the caller (the CLI) and passed down
/// to every frozen linear. It tries what it would use up front (loading the CUDA kernel's PTX into the context),
/// records what it chose and why, and <see cref="Report"/>s it (`info`, the training summary); a kernel that fails
/// to load is reported as the reason for the torch-op path, never swapped silently mid-run. The rules per weight:
/// CPU tensors use the SIMD loop; CUDA tensors use the CUDA kernel when chosen and the weight fits it (bf16/fp32
/// output, a multiple of 8 weights: every Llama projection), else torch ops. The fused training ops (RMSNorm, RoPE,
/// GLU, LoRA dropout, AdamW, the chunked loss) are chosen here too, as <see cref="Fused"/>, and reported alike, and so
/// are LLM.int8()'s int8 product and the ternary product, whose CUDA kernel is used only after it passed a self-check
/// against torch ops on the device (<see cref="TernaryKernelSelfCheck"/>).
/// </summary>
public sealed class KernelSelection
{
    readonly FourBitCudaKernel? _cuda;
    readonly Int8MatMul _int8;
    readonly TernaryCudaKernel? _ternaryCuda;

    KernelSelection(Device device, FourBitDequantPath path, string reason, FourBitCudaKernel? cuda, FusedKernels fused,
        (Int8MatMul Path, string Reason)? int8 = null, (TernaryMatMulPath Path, string Reason, TernaryCudaKernel? Kernel)? ternary = null)
    {
        Device = device;
        FourBitDequant = path;
        FourBitDequantReason = reason;
        _cuda = cuda;
        Fused = fused;
        (_int8, Int8Reason) = int8 ?? (Int8MatMul.TorchOps, "exact fp32 chunks (no selection made)");
        (TernaryPath, TernaryReason, _ternaryCuda) = ternary ?? DefaultTernary(device);
    }

    /// <summary>How LLM.int8()'s int8 x int8 product runs on <see cref="Device"/>.</summary>
    public Int8MatMulPath Int8Path => _int8.Path;

    /// <summary>Why (for the report).</summary>
    public string Int8Reason { get; }

    /// <summary>How the ternary (BitNet b1.58) product runs on <see cref="Device"/>.</summary>
    public TernaryMatMulPath TernaryPath { get; }

    /// <summary>Why (for the report).</summary>
    public string TernaryReason { get; }

    /// <summary>The loaded ternary kernel, chosen after it passed its self-check on <see cref="Device"/>; null when
    /// the ternary product does not run on CUDA here.</summary>
    public TernaryCudaKernel? TernaryCuda => _ternaryCuda;

    static (TernaryMatMulPath, string, TernaryCudaKernel?) DefaultTernary(Device device) => device.type == DeviceType.CPU
        ? (TernaryMatMulPath.CpuSimd, "add/subtract SIMD loop over the packed bytes", null)
        : (TernaryMatMulPath.TorchOps, "no ternary kernel loaded by this selection: unpack and matmul the integer codes", null);

    /// <summary>
    /// The ternary product on CUDA: the add/subtract kernel unless disabled, not in this build, failing to load, or
    /// failing its self-check on the device (<see cref="TernaryKernelSelfCheck"/>), each reported as the reason for
    /// torch ops.
    /// </summary>
    static (TernaryMatMulPath, string, TernaryCudaKernel?) TernaryFor(Device device, KernelOptions options)
    {
        if (device.type != DeviceType.CUDA) return DefaultTernary(device);
        if (options.DisableCuda)
            return (TernaryMatMulPath.TorchOps, "CUDA kernels disabled by the caller: unpack and matmul the integer codes", null);
        bool fromDir = options.PtxDir is not null && File.Exists(Path.Combine(options.PtxDir, "ternary_matmul.ptx"));
        if (!fromDir && !TernaryCudaKernel.IsEmbedded)
            return (TernaryMatMulPath.TorchOps, "the ternary kernel's PTX is not embedded in this build (scripts/build_ptx.sh): unpack and matmul the integer codes", null);
        return ChooseTernaryKernel(() => TernaryCudaKernel.Load(device, options.PtxDir), k => TernaryKernelSelfCheck.Run(device, k.Multiply),
            k => "add/subtract kernel" + (fromDir ? $" from {k.Source}" : "") + ", equal to torch ops on its self-check on this device");
    }

    /// <summary>
    /// The decision, apart from CUDA so that tests can hand it any kernel: <paramref name="load"/> the kernel, run
    /// <paramref name="selfCheck"/> (null = passed, else what differed); use the kernel only when both succeed, else
    /// torch ops with the failure (first line) as the reason.
    /// </summary>
    internal static (TernaryMatMulPath Path, string Reason, T? Kernel) ChooseTernaryKernel<T>(Func<T> load, Func<T, string?> selfCheck, Func<T, string> describe)
        where T : class
    {
        const string fallback = ": unpack and matmul the integer codes";
        T kernel;
        try
        {
            kernel = load();
        }
        catch (Exception e)
        {
            return (TernaryMatMulPath.TorchOps, $"the ternary kernel failed to load ({FirstLine(e.Message)})" + fallback, null);
        }
        string? mismatch;
        try
        {
            mismatch = selfCheck(kernel);
        }
        catch (Exception e)
        {
            mismatch = $"{e.GetType().Name}: {FirstLine(e.Message)}";
        }
        return mismatch is null
            ? (TernaryMatMulPath.Cuda, describe(kernel), kernel)
            : (TernaryMatMulPath.TorchOps, $"the ternary kernel failed its self-check on the device ({FirstLine(mismatch)})" + fallback, null);
    }

    static string FirstLine(string s) => s.Split('\n')[0];

    /// <summary>The int8 product for a weight on <paramref name="device"/>: the chosen one on this selection's device
    /// type, the exact fp32 path elsewhere.</summary>
    public Int8MatMul Int8MatMulFor(Device device) => device.type == Device.type ? _int8 : Int8MatMul.TorchOps;

    /// <summary>The ternary path for a weight on <paramref name="device"/>: the add/subtract loop for CPU tensors
    /// (unless the reference was asked for), the chosen path for this selection's device type, torch ops elsewhere.</summary>
    public TernaryMatMulPath TernaryPathFor(Device device) => device.type switch
    {
        DeviceType.CPU when FourBitDequant != FourBitDequantPath.TorchOps => TernaryMatMulPath.CpuSimd,
        // The kernel's module lives in one device's context: a weight on another CUDA device takes torch ops.
        _ when TernaryPath == TernaryMatMulPath.Cuda => device.type == DeviceType.CUDA && device.index == _ternaryCuda!.DeviceIndex
            ? TernaryMatMulPath.Cuda : TernaryMatMulPath.TorchOps,
        _ when device.type == Device.type => TernaryPath,
        _ => TernaryMatMulPath.TorchOps,
    };

    /// <summary>The device the choices were made for.</summary>
    public Device Device { get; }

    /// <summary>How 4-bit weights on <see cref="Device"/> are dequantized.</summary>
    public FourBitDequantPath FourBitDequant { get; }

    /// <summary>Why (for the report).</summary>
    public string FourBitDequantReason { get; }

    /// <summary>The fused training ops for <see cref="Device"/>, each with its path and reason.</summary>
    public FusedKernels Fused { get; }

    /// <summary>The loaded dequantization kernel (for `bench kernel`'s variants), or null when it does not run.</summary>
    public FourBitCudaKernel? FourBitCuda => _cuda;

    /// <summary>The choices for <paramref name="device"/>: on CUDA, the fused kernel unless disabled, not in this
    /// build, or failing to load (each reported); on the CPU, the SIMD loop.</summary>
    public static KernelSelection For(Device device, KernelOptions? options = null)
    {
        options ??= new KernelOptions();
        var fused = FusedKernels.Load(device, options.DisableCuda, options.PtxDir, torchWeightGradients: options.TorchWeightGradients);
        var int8 = Int8For(device, options);
        var ternary = TernaryFor(device, options);
        if (device.type != DeviceType.CUDA)
            return new(device, FourBitDequantPath.CpuSimd, "fused SIMD loop, bit-identical to the reference", null, fused, int8, ternary);
        if (options.DisableCuda)
            return new(device, FourBitDequantPath.TorchOps, "CUDA kernels disabled by the caller", null, fused, int8, ternary);
        bool fromDir = options.PtxDir is not null && File.Exists(Path.Combine(options.PtxDir, "nf4_dequant.ptx"));
        if (!fromDir && !FourBitCudaKernel.IsEmbedded)
            return new(device, FourBitDequantPath.TorchOps, "the fused kernel's PTX is not embedded in this build (scripts/build_ptx.sh)", null, fused, int8, ternary);
        try
        {
            using (zeros(1, device: device)) { }   // libtorch makes its CUDA context current on first use
            var kernel = FourBitCudaKernel.Load(options.PtxDir);
            return new(device, FourBitDequantPath.CudaPtx,
                "fused kernel" + (fromDir ? $" from {kernel.Source}" : "") + "; torch-ops for fp16 outputs or sizes not a multiple of 8", kernel, fused, int8, ternary);
        }
        catch (Exception e)
        {
            return new(device, FourBitDequantPath.TorchOps, $"the fused kernel failed to load: {e.Message.Split('\n')[0]}", null, fused, int8, ternary);
        }
    }

    /// <summary>
    /// LLM.int8()'s product: on CUDA libtorch's int8 GEMM (torch._int_mm, cuBLASLt) unless disabled or failing to
    /// compile; on the CPU the exact fp32 path, which runs at MKL speed on every x86-64 (torch._int_mm there is fast
    /// only with AVX512-VNNI, and gives the same integers).
    /// </summary>
    static (Int8MatMul, string) Int8For(Device device, KernelOptions options)
    {
        if (device.type != DeviceType.CUDA)
            return (Int8MatMul.TorchOps, "exact fp32 chunks of <= 1024 (MKL); torch._int_mm gives the same integers");
        if (options.DisableCuda)
            return (Int8MatMul.TorchOps, "CUDA kernels disabled by the caller: exact fp32 chunks");
        try
        {
            return (Int8MatMul.CompileIntMm(device), "torch._int_mm (cuBLASLt int8 GEMM) through TorchScript; exact fp32 chunks for k or m not a multiple of 8");
        }
        catch (Exception e)
        {
            return (Int8MatMul.TorchOps, $"torch._int_mm unavailable ({e.Message.Split('\n')[0]}): exact fp32 chunks");
        }
    }

    /// <summary>What runs when a caller chose nothing (library use, tests): the SIMD loop on CPU tensors, torch ops on
    /// CUDA tensors (no kernel is loaded). A new instance each time: the fused ops' call tallies are their own.</summary>
    public static KernelSelection Portable =>
        new(CPU, FourBitDequantPath.CpuSimd, "no selection made: SIMD loop on the CPU, torch ops elsewhere", null,
            FusedKernels.Reference("no selection made: torch-op references"));

    /// <summary>Torch ops everywhere: the reference, for tests that compare paths.</summary>
    public static KernelSelection Reference(Device device) =>
        new(device, FourBitDequantPath.TorchOps, "reference path requested", null, FusedKernels.Reference("reference path requested"),
            (Int8MatMul.TorchOps, "reference path requested"), (TernaryMatMulPath.TorchOps, "reference path requested", null));

    /// <summary>A selection that runs LLM.int8()'s product through torch._int_mm on <paramref name="device"/> (tests
    /// compare it with the exact fp32 path); throws when libtorch cannot run it.</summary>
    public static KernelSelection WithIntMm(Device device) =>
        new(device, device.type == DeviceType.CPU ? FourBitDequantPath.CpuSimd : FourBitDequantPath.TorchOps, "int_mm requested", null,
            FusedKernels.Reference("int_mm requested"), (Int8MatMul.CompileIntMm(device), "torch._int_mm requested"));

    /// <summary>One line per choice, e.g. "nf4/fp4 dequant on cuda: cuda-ptx (fused kernel; ...)", then the fused ops'.</summary>
    public IReadOnlyList<string> Report() =>
    [
        $"nf4/fp4 dequant on {Device.type.ToString().ToLowerInvariant()}: {Spell(FourBitDequant)} ({FourBitDequantReason})",
        $"nf4/fp4 quantize on {Device.type.ToString().ToLowerInvariant()}: {(Device.type == DeviceType.CPU ? "cpu-simd" : "torch-ops")}",
        $"llm-int8 int8 matmul on {Device.type.ToString().ToLowerInvariant()}: {Spell(Int8Path)} ({Int8Reason})",
        TernaryLine(Device.type.ToString().ToLowerInvariant(), TernaryPath, TernaryReason),
        .. Fused.Report(),
    ];

    /// <summary>The ternary report line; on CUDA it names both paths of the per-call token rule (<see cref="TernaryMatMul.PathForTokens"/>).</summary>
    internal static string TernaryLine(string device, TernaryMatMulPath path, string reason) => path == TernaryMatMulPath.Cuda
        ? $"ternary matmul on {device}: {Spell(path)} add/subtract kernel up to {TernaryMatMul.CudaKernelMaxTokens} tokens a call, " +
          $"unpack + matmul above (measured on an H200: the kernel wins up to 16 tokens, the matmul from 64; 6x at 2048) ({reason})"
        : $"ternary matmul on {device}: {Spell(path)} ({reason})";

    /// <summary>"int-mm", "fp32-exact".</summary>
    public static string Spell(Int8MatMulPath path) => path == Int8MatMulPath.IntMm ? "int-mm" : "fp32-exact";

    /// <summary>"cpu-simd", "cuda-ptx", "torch-ops".</summary>
    public static string Spell(TernaryMatMulPath path) => path switch
    {
        TernaryMatMulPath.CpuSimd => "cpu-simd",
        TernaryMatMulPath.Cuda => "cuda-ptx",
        _ => "torch-ops",
    };

    /// <summary>"cpu-simd", "cuda-ptx", "torch-ops".</summary>
    public static string Spell(FourBitDequantPath path) => path switch
    {
        FourBitDequantPath.CpuSimd => "cpu-simd",
        FourBitDequantPath.CudaPtx => "cuda-ptx",
        _ => "torch-ops",
    };

    /// <summary>The path a weight on <paramref name="device"/> takes to <paramref name="dtype"/> under these choices.</summary>
    public FourBitDequantPath PathFor(FourBitWeight w, ScalarType dtype) => w.Packed.device_type switch
    {
        DeviceType.CPU when FourBitDequant != FourBitDequantPath.TorchOps && w.Numel <= int.MaxValue / 4 => FourBitDequantPath.CpuSimd,
        DeviceType.CUDA when _cuda is not null && FourBitCudaKernel.Unsupported(w, dtype) is null => FourBitDequantPath.CudaPtx,
        _ => FourBitDequantPath.TorchOps,
    };

    /// <summary>The dense weight written into <paramref name="destination"/> (the weight's elements, in its dtype):
    /// by the CUDA kernel in place where it can write there, else computed by the chosen path and copied.</summary>
    public void DequantizeInto(FourBitWeight w, Tensor destination)
    {
        if (PathFor(w, destination.dtype) == FourBitDequantPath.CudaPtx && FourBitCudaKernel.Writable(w, destination))
        {
            _cuda!.DequantizeInto(w, destination);
            return;
        }
        using var dense = Dequantize(w, destination.dtype);
        destination.copy_(dense.view(destination.shape));
    }

    /// <summary>The dense weight, computed by the chosen path.</summary>
    public Tensor Dequantize(FourBitWeight w, ScalarType dtype) => PathFor(w, dtype) switch
    {
        FourBitDequantPath.CpuSimd => w.DequantizeWithCpuKernel(dtype),
        FourBitDequantPath.CudaPtx => _cuda!.Dequantize(w, dtype),
        _ => w.DequantizeWithTorchOps(dtype),
    };
}
