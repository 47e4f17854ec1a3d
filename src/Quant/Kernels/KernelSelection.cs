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
public sealed record KernelOptions(bool DisableCuda = false, string? PtxDir = null);

/// <summary>
/// The one place that decides which kernels run on a device, made once by the caller (the CLI) and passed down
/// to every frozen linear. It tries what it would use up front (loading the CUDA kernel's PTX into the context),
/// records what it chose and why, and <see cref="Report"/>s it (`info`, the training summary); a kernel that fails
/// to load is reported as the reason for the torch-op path, never swapped silently mid-run. The rules per weight:
/// CPU tensors use the SIMD loop; CUDA tensors use the CUDA kernel when chosen and the weight fits it (bf16/fp32
/// output, a multiple of 8 weights: every Llama projection), else torch ops. The fused training ops (RMSNorm, RoPE,
/// GLU, LoRA dropout, AdamW, the chunked loss) are chosen here too, as <see cref="Fused"/>, and reported alike.
/// </summary>
public sealed class KernelSelection
{
    readonly FourBitCudaKernel? _cuda;

    KernelSelection(Device device, FourBitDequantPath path, string reason, FourBitCudaKernel? cuda, FusedKernels fused)
    {
        Device = device;
        FourBitDequant = path;
        FourBitDequantReason = reason;
        _cuda = cuda;
        Fused = fused;
    }

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
        var fused = FusedKernels.Load(device, options.DisableCuda, options.PtxDir);
        if (device.type != DeviceType.CUDA)
            return new(device, FourBitDequantPath.CpuSimd, "fused SIMD loop, bit-identical to the reference", null, fused);
        if (options.DisableCuda)
            return new(device, FourBitDequantPath.TorchOps, "CUDA kernels disabled by the caller", null, fused);
        bool fromDir = options.PtxDir is not null && File.Exists(Path.Combine(options.PtxDir, "nf4_dequant.ptx"));
        if (!fromDir && !FourBitCudaKernel.IsEmbedded)
            return new(device, FourBitDequantPath.TorchOps, "the fused kernel's PTX is not embedded in this build (scripts/build_ptx.sh)", null, fused);
        try
        {
            using (zeros(1, device: device)) { }   // libtorch makes its CUDA context current on first use
            var kernel = FourBitCudaKernel.Load(options.PtxDir);
            return new(device, FourBitDequantPath.CudaPtx,
                "fused kernel" + (fromDir ? $" from {kernel.Source}" : "") + "; torch-ops for fp16 outputs or sizes not a multiple of 8", kernel, fused);
        }
        catch (Exception e)
        {
            return new(device, FourBitDequantPath.TorchOps, $"the fused kernel failed to load: {e.Message.Split('\n')[0]}", null, fused);
        }
    }

    /// <summary>What runs when a caller chose nothing (library use, tests): the SIMD loop on CPU tensors, torch ops on
    /// CUDA tensors (no kernel is loaded). A new instance each time: the fused ops' call tallies are their own.</summary>
    public static KernelSelection Portable =>
        new(CPU, FourBitDequantPath.CpuSimd, "no selection made: SIMD loop on the CPU, torch ops elsewhere", null,
            FusedKernels.Reference("no selection made: torch-op references"));

    /// <summary>Torch ops everywhere: the reference, for tests that compare paths.</summary>
    public static KernelSelection Reference(Device device) =>
        new(device, FourBitDequantPath.TorchOps, "reference path requested", null, FusedKernels.Reference("reference path requested"));

    /// <summary>One line per choice, e.g. "nf4/fp4 dequant on cuda: cuda-ptx (fused kernel; ...)", then the fused ops'.</summary>
    public IReadOnlyList<string> Report() =>
    [
        $"nf4/fp4 dequant on {Device.type.ToString().ToLowerInvariant()}: {Spell(FourBitDequant)} ({FourBitDequantReason})",
        $"nf4/fp4 quantize on {Device.type.ToString().ToLowerInvariant()}: {(Device.type == DeviceType.CPU ? "cpu-simd" : "torch-ops")}",
        .. Fused.Report(),
    ];

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

    /// <summary>The dense weight, computed by the chosen path.</summary>
    public Tensor Dequantize(FourBitWeight w, ScalarType dtype) => PathFor(w, dtype) switch
    {
        FourBitDequantPath.CpuSimd => w.DequantizeWithCpuKernel(dtype),
        FourBitDequantPath.CudaPtx => _cuda!.Dequantize(w, dtype),
        _ => w.DequantizeWithTorchOps(dtype),
    };
}
