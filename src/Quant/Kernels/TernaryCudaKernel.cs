using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Kernels;

/// <summary>
/// The ternary product on CUDA with additions and subtractions only (ternary_matmul.cu, shipped as PTX built by
/// scripts/build_ptx.sh and embedded here): int8 activation codes [n, k] times ternary weights packed four output rows
/// to a byte [m/4, k] (Hugging Face's BitNet layout, <see cref="TernaryWeight"/>) -> exact int32 sums [n, m], the same
/// integers as <see cref="CpuTernaryKernel"/> and the dequantize-then-matmul reference. An instance is the module
/// loaded into one device's CUDA context; <see cref="KernelSelection"/> loads it once per run and uses it only after
/// <see cref="TernaryKernelSelfCheck"/> found it equal to torch ops on that device. A load failure is an exception for
/// the selection to report, never a silent swap.
/// </summary>
public sealed unsafe class TernaryCudaKernel
{
    const string PtxFile = "ternary_matmul.ptx";
    const string KernelName = "qln_ternary_sums";

    /// <summary>Packed rows per block and tokens per warp: kWarps and kTokens in ternary_matmul.cu.</summary>
    internal const int Warps = 4, Tokens = 8;

    /// <summary>CUDA's limit on grid.y; larger token counts are launched in slices of this many token groups.</summary>
    const long MaxGridY = 65535;

    /// <summary>Largest k whose int32 sums cannot overflow: k * 128 &lt; 2^31.</summary>
    internal const long MaxInFeatures = int.MaxValue / 128;

    readonly PtxModule _module;

    TernaryCudaKernel(PtxModule module, int deviceIndex)
    {
        _module = module;
        DeviceIndex = deviceIndex;
    }

    /// <summary>True when this build carries the PTX (scripts/build_ptx.sh builds it).</summary>
    public static bool IsEmbedded => PtxModule.IsEmbedded(typeof(TernaryCudaKernel).Assembly, PtxFile);

    /// <summary>Where the loaded image came from ("embedded" or a path).</summary>
    public string Source => _module.Source;

    /// <summary>The CUDA device whose context holds the module: the kernel runs on tensors of this device only.</summary>
    public int DeviceIndex { get; }

    /// <summary>Every kernel <see cref="Multiply"/> launches (a test holds them to the embedded PTX).</summary>
    internal static IEnumerable<string> KernelNames => [KernelName];

    /// <summary>
    /// Loads the PTX (<paramref name="ptxDir"/>/ternary_matmul.ptx during kernel development, else the embedded one)
    /// into the CUDA context of <paramref name="device"/>, which libtorch makes current first. Throws with the
    /// driver's (or libtorch's) error.
    /// </summary>
    public static TernaryCudaKernel Load(Device device, string? ptxDir = null)
    {
        if (device.type != DeviceType.CUDA) throw new ArgumentException($"the ternary CUDA kernel loads on a CUDA device, not {device}");
        int index;
        using (var probe = zeros(1, device: device)) index = probe.device_index;   // libtorch makes its CUDA context current on first use
        return new(PtxModule.Load(typeof(TernaryCudaKernel).Assembly, PtxFile, KernelNames, ptxDir), index);
    }

    /// <summary>
    /// Why <paramref name="codes"/> and <paramref name="packed"/> cannot go through the kernel (null when they can):
    /// int8 codes [n, k] and uint8 packed weights [m/4, k], both contiguous, k below <see cref="MaxInFeatures"/>, both
    /// on the CUDA device <paramref name="deviceIndex"/>. The device is checked last, so the rest holds on any device.
    /// </summary>
    public static string? Unsupported(Tensor codes, Tensor packed, int deviceIndex)
    {
        if (codes.dtype != ScalarType.Int8) return $"codes are {codes.dtype}, not Int8";
        if (packed.dtype != ScalarType.Byte) return $"packed weights are {packed.dtype}, not Byte (uint8)";
        if (codes.dim() != 2 || packed.dim() != 2) return $"codes [{string.Join(", ", codes.shape)}] and packed [{string.Join(", ", packed.shape)}] must both be 2-D";
        if (codes.shape[1] != packed.shape[1]) return $"codes have {codes.shape[1]} inputs, packed weights {packed.shape[1]}";
        if (codes.shape[1] > MaxInFeatures) return $"{codes.shape[1]} inputs: int32 sums could overflow past {MaxInFeatures}";
        if (!codes.is_contiguous() || !packed.is_contiguous()) return "codes and packed weights must be contiguous";
        if (codes.device_type != DeviceType.CUDA || packed.device_type != DeviceType.CUDA
            || codes.device_index != deviceIndex || packed.device_index != deviceIndex)
            return $"codes on {codes.device}, packed weights on {packed.device}: the kernel was loaded for cuda:{deviceIndex}";
        return null;
    }

    /// <summary>
    /// int32 [n, m] = codes [n, k] @ W^T, W the ternary weights packed in <paramref name="packed"/> [m/4, k]: every sum
    /// exact. Throws <see cref="ArgumentException"/> naming what breaks the contract (<see cref="Unsupported"/>).
    /// </summary>
    public Tensor Multiply(Tensor codes, Tensor packed)
    {
        if (Unsupported(codes, packed, DeviceIndex) is { } why) throw new ArgumentException($"the ternary CUDA kernel cannot multiply these: {why}");
        long n = codes.shape[0], k = codes.shape[1], quarter = packed.shape[0], m = 4 * quarter;
        using var scope = NewDisposeScope();
        var output = empty([n, m], ScalarType.Int32, codes.device);
        if (n == 0 || quarter == 0) return output.MoveToOuterDisposeScope();   // nothing to launch (a grid of 0 blocks is an error)
        // The 32-bit path (k % 4 == 0) reads 4-byte words: both base addresses must be 4-byte aligned (a view with a
        // storage offset need not be; a fresh allocation is).
        if (k % 4 == 0)
        {
            if ((long)DeviceTensors.Ptr(codes) % 4 != 0) codes = codes.clone();
            if ((long)DeviceTensors.Ptr(packed) % 4 != 0) packed = packed.clone();
        }
        IntPtr pCodes = DeviceTensors.Ptr(codes), pPacked = DeviceTensors.Ptr(packed), pOut = DeviceTensors.Ptr(output);
        uint gridX = DeviceTensors.Blocks(quarter, Warps) ?? throw new ArgumentException($"{m} outputs exceed the kernel's grid");
        var fn = _module.Function(KernelName);
        void** args = stackalloc void*[6];
        // Slices of at most MaxGridY groups of Tokens tokens (grid.y's limit); each slice's codes start at row t0
        // (t0 * k bytes in: 4-byte aligned when k % 4 == 0) and its sums at row t0 of the output.
        for (long t0 = 0; t0 < n; t0 += MaxGridY * Tokens)
        {
            long rows = Math.Min(MaxGridY * Tokens, n - t0);
            IntPtr a = pCodes + (nint)(t0 * k), c = pOut + (nint)(t0 * m * sizeof(int));
            args[0] = &a; args[1] = &pPacked; args[2] = &c; args[3] = &rows; args[4] = &k; args[5] = &quarter;
            CudaDriver.Launch(_module.Context, fn, gridX, (uint)((rows + Tokens - 1) / Tokens), 32 * Warps, args);
        }
        return output.MoveToOuterDisposeScope();
    }
}
