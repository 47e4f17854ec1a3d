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
/// <param name="PtxPath">load the CUDA kernel from this PTX file instead of the embedded one (kernel development).</param>
public sealed record KernelOptions(bool DisableCuda = false, string? PtxPath = null);

/// <summary>
/// The one place that decides which kernels run on a device, made once by the caller (the CLI) and passed down
/// to every frozen linear. It tries what it would use up front (loading the CUDA kernel's PTX into the context),
/// records what it chose and why, and <see cref="Report"/>s it (`info`, the training summary); a kernel that fails
/// to load is reported as the reason for the torch-op path, never swapped silently mid-run. The rules per weight:
/// CPU tensors use the SIMD loop; CUDA tensors use the CUDA kernel when chosen and the weight fits it (bf16/fp32
/// output, a multiple of 8 weights: every Llama projection), else torch ops.
/// </summary>
public sealed class KernelSelection
{
    readonly FourBitCudaKernel? _cuda;

    KernelSelection(Device device, FourBitDequantPath path, string reason, FourBitCudaKernel? cuda)
    {
        Device = device;
        FourBitDequant = path;
        FourBitDequantReason = reason;
        _cuda = cuda;
    }

    /// <summary>The device the choices were made for.</summary>
    public Device Device { get; }

    /// <summary>How 4-bit weights on <see cref="Device"/> are dequantized.</summary>
    public FourBitDequantPath FourBitDequant { get; }

    /// <summary>Why (for the report).</summary>
    public string FourBitDequantReason { get; }

    /// <summary>The choices for <paramref name="device"/>: on CUDA, the fused kernel unless disabled, not in this
    /// build, or failing to load (each reported); on the CPU, the SIMD loop.</summary>
    public static KernelSelection For(Device device, KernelOptions? options = null)
    {
        options ??= new KernelOptions();
        if (device.type != DeviceType.CUDA)
            return new(device, FourBitDequantPath.CpuSimd, "fused SIMD loop, bit-identical to the reference", null);
        if (options.DisableCuda)
            return new(device, FourBitDequantPath.TorchOps, "CUDA kernels disabled by the caller", null);
        if (options.PtxPath is null && !FourBitCudaKernel.IsEmbedded)
            return new(device, FourBitDequantPath.TorchOps, "the fused kernel's PTX is not embedded in this build (scripts/gpu/build_ptx.sh)", null);
        try
        {
            using (zeros(1, device: device)) { }   // libtorch makes its CUDA context current on first use
            var kernel = FourBitCudaKernel.Load(options.PtxPath);
            return new(device, FourBitDequantPath.CudaPtx,
                "fused kernel" + (options.PtxPath is null ? "" : $" from {options.PtxPath}") + "; torch-ops for fp16 outputs or sizes not a multiple of 8", kernel);
        }
        catch (Exception e)
        {
            return new(device, FourBitDequantPath.TorchOps, $"the fused kernel failed to load: {e.Message.Split('\n')[0]}", null);
        }
    }

    /// <summary>What runs when a caller chose nothing (library use, tests): the SIMD loop on CPU tensors, torch ops on
    /// CUDA tensors (no kernel is loaded).</summary>
    public static readonly KernelSelection Portable =
        new(CPU, FourBitDequantPath.CpuSimd, "no selection made: SIMD loop on the CPU, torch ops elsewhere", null);

    /// <summary>Torch ops everywhere: the reference, for tests that compare paths.</summary>
    public static KernelSelection Reference(Device device) =>
        new(device, FourBitDequantPath.TorchOps, "reference path requested", null);

    /// <summary>One line per choice, e.g. "nf4/fp4 dequant on cuda: cuda-ptx (fused kernel; ...)".</summary>
    public IReadOnlyList<string> Report() =>
    [
        $"nf4/fp4 dequant on {Device.type.ToString().ToLowerInvariant()}: {Spell(FourBitDequant)} ({FourBitDequantReason})",
        $"nf4/fp4 quantize on {Device.type.ToString().ToLowerInvariant()}: {(Device.type == DeviceType.CPU ? "cpu-simd" : "torch-ops")}",
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
