using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A weight in NF4 or FP4, blockwise, exactly in bitsandbytes' layout (functional.quantize_4bit): the weight is
/// flattened row-major and cut into blocks of BlockSize; each block is multiplied by 1/absmax and every value
/// mapped to its 4-bit code (<see cref="FourBitCodebook.Encode"/>); two codes per byte, the even-indexed element in
/// the high nibble. Dequantized value: codebook[code] * absmax[block] in fp32, then cast.
/// Immutable by convention: nothing writes into its tensors.
/// </summary>
/// <param name="Type">NF4 or FP4.</param>
/// <param name="Packed">uint8 (ceil(numel / 2)); bitsandbytes stores it as (ceil(numel / 2), 1).</param>
/// <param name="Scales">the per-block absmax, plain or double-quantized.</param>
/// <param name="Shape">the dense shape, e.g. [out, in].</param>
/// <param name="BlockSize">elements per block, a power of two (64 in QLoRA).</param>
/// <param name="DType">dtype of the weight that was quantized (bitsandbytes' quant_state.dtype).</param>
public sealed record FourBitWeight(
    FourBitType Type, Tensor Packed, BlockScales Scales, long[] Shape, int BlockSize, ScalarType DType) : IQuantizedWeight
{
    public const int DefaultBlockSize = 64;

    /// <summary>Elements per step of the CPU path (16 MiB of fp32).</summary>
    const long ChunkElements = 1 << 22;

    public long Numel => QuantInputChecks.Numel(Shape);

    public bool IsDoubleQuantized => Scales is DoubleQuantizedScales;

    /// <summary>
    /// Quantizes <paramref name="weight"/> (fp32/bf16/fp16) on its own device: a fused kernel on the CPU, torch ops
    /// elsewhere (CUDA), both bit-identical to <see cref="FourBitReference"/>.
    /// <paramref name="name"/> only labels errors (NaN/Inf, bad blocksize).
    /// </summary>
    public static FourBitWeight Quantize(Tensor weight, FourBitType type, int blockSize = DefaultBlockSize,
        bool doubleQuant = false, int nestedBlockSize = DoubleQuantizedScales.DefaultNestedBlockSize, string? name = null) =>
        Quantize(weight, type, blockSize, doubleQuant, nestedBlockSize, name, useTorchOps: false);

    /// <summary>
    /// The one place the quantizer path is chosen: the fused CPU kernel for CPU tensors, torch ops elsewhere (CUDA).
    /// Tests force <paramref name="useTorchOps"/> to hold both paths to the reference.
    /// </summary>
    internal static FourBitWeight Quantize(Tensor weight, FourBitType type, int blockSize, bool doubleQuant,
        int nestedBlockSize, string? name, bool useTorchOps)
    {
        QuantInputChecks.RequireFloat(weight, name);
        long n = weight.numel();
        QuantInputChecks.RequireBlockSize(blockSize, n, name);

        using var scope = NewDisposeScope();
        var flat = weight.detach().reshape(-1);                                   // (n)
        var (packed, absmax) = useTorchOps || flat.device_type != DeviceType.CPU
            ? QuantizeWithTorchOps(flat, type, blockSize)
            : QuantizeWithCpuKernel(flat, type, blockSize);
        QuantInputChecks.RequireFinite(absmax, name); // a NaN or Inf anywhere makes its block's absmax NaN or Inf
        packed.MoveToOuterDisposeScope();
        BlockScales scales = doubleQuant
            ? DoubleQuantizedScales.Quantize(absmax, nestedBlockSize)
            : new PlainScales(absmax);
        foreach (var t in scales.Tensors) t.MoveToOuterDisposeScope();
        return new FourBitWeight(type, packed, scales, weight.shape, blockSize, weight.dtype);
    }

    /// <summary>
    /// The dense weight of <see cref="Shape"/> in <paramref name="dtype"/>, by the portable rule: the
    /// <see cref="CpuFourBitKernel"/> for CPU tensors, torch ops elsewhere (the fused CUDA kernel runs only where a
    /// caller's <see cref="KernelSelection"/> chose it: <see cref="FourBitLinear"/>). All paths are the same
    /// arithmetic, equal bit for bit.
    /// </summary>
    public Tensor Dequantize(ScalarType dtype) => Dequantize(dtype, useTorchOps: false);

    /// <summary>The dense weight written in place by the CUDA kernel where it applies (else made and copied).</summary>
    public void DequantizeInto(Tensor destination) => KernelSelection.Portable.DequantizeInto(this, destination);

    /// <summary>Dequantizes to the dtype the weight had before quantization.</summary>
    public Tensor Dequantize() => Dequantize(DType);

    /// <summary>The portable rule; tests force <paramref name="useTorchOps"/>.</summary>
    internal Tensor Dequantize(ScalarType dtype, bool useTorchOps) =>
        (useTorchOps ? KernelSelection.Reference(Packed.device) : KernelSelection.Portable).Dequantize(this, dtype);

    /// <summary>
    /// The device-agnostic torch-op path (a 256-entry byte -> (high, low) value table, then one multiply per block):
    /// the reference the kernels are measured against.
    /// </summary>
    public Tensor DequantizeWithTorchOps(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var pairs = CodeTables.NibblePairs(FourBitCodebook.Name(Type), Packed.device, FourBitCodebook.Values(Type));
        var values = pairs.index_select(0, Packed.to(ScalarType.Int64)).view(-1); // (2 * nBytes) fp32
        var dense = Blockwise.MultiplyByBlockScale(values, Scales.Dequantize(), BlockSize, Numel);
        return dense.view(Shape).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The CPU path: <see cref="CpuFourBitKernel"/> over the packed codes (CPU tensors, numel up to int.MaxValue / 4).</summary>
    internal Tensor DequantizeWithCpuKernel(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var scales = Scales.Dequantize().contiguous();                            // (nBlocks) fp32
        var dense = CpuFourBitKernel.Dequantize(Packed.contiguous(), scales, Type, BlockSize, Numel);
        return dense.view(Shape).to(dtype).MoveToOuterDisposeScope();
    }

    public FourBitWeight To(Device device) => this with { Packed = Packed.to(device), Scales = Scales.To(device) };

    /// <summary>Packed codes plus scales (the 16-entry codebook is shared and not counted).</summary>
    public long StorageBytes => Packed.shape[0] + Scales.StorageBytes;

    /// <summary>"nf4", "nf4-dq", "fp4-b128", ...: the same spelling <see cref="BaseFormat.Parse"/> reads.</summary>
    public string FormatName => FourBitFormat.Spell(Type, BlockSize, IsDoubleQuantized,
        (Scales as DoubleQuantizedScales)?.NestedBlockSize ?? DoubleQuantizedScales.DefaultNestedBlockSize);

    /// <summary>Device-agnostic path: packed codes (ceil(n/2)) and absmax (nBlocks) from torch ops, chunk by chunk
    /// (<see cref="InChunks"/>). A chunk's fp32 copy, |x|, scaled values and int32 codes are its only temporaries, ~17
    /// bytes an element: for a whole 11008 x 4096 MLP weight of a 7B model they were 0.75 GiB, the device's peak while
    /// loading (the training step's own is lower).</summary>
    static (Tensor Packed, Tensor Absmax) QuantizeWithTorchOps(Tensor flat, FourBitType type, int blockSize) =>
        InChunks(flat, blockSize, part =>
        {
            long len = part.shape[0];
            var (scaled, absmax) = Blockwise.ScaleByAbsmax(Blockwise.ToBlocks(part.to(ScalarType.Float32), blockSize));
            var codes = EncodeCodes(type, scaled).view(-1);                       // (nBlocks * blockSize) uint8
            // An odd n keeps one padding code (the code of 0.0) in the last low nibble, as bitsandbytes does (only the
            // last chunk can be odd: the others are whole blocks of a power of two).
            return (PackNibbles(codes.narrow(0, 0, len + len % 2)), absmax);
        });

    /// <summary>CPU path: the fused kernel over fp32 chunks (bounds the fp32 copy of a bf16 weight).</summary>
    static (Tensor Packed, Tensor Absmax) QuantizeWithCpuKernel(Tensor flat, FourBitType type, int blockSize) =>
        InChunks(flat, blockSize, part => CpuFourBitKernel.Quantize(part.to(ScalarType.Float32).contiguous(), type, blockSize));

    /// <summary>Both quantizers' loop: <paramref name="quantize"/> over chunks of whole blocks of <paramref name="flat"/>
    /// (every step is per block, so chunks change no bit), each in its own dispose scope so its temporaries go before
    /// the next; the packed codes and absmax concatenated.</summary>
    static (Tensor Packed, Tensor Absmax) InChunks(Tensor flat, int blockSize, Func<Tensor, (Tensor Packed, Tensor Absmax)> quantize)
    {
        long n = flat.shape[0], chunk = Math.Max(blockSize, ChunkElements);   // powers of two: chunks hold whole blocks
        var packed = new List<Tensor>();
        var absmax = new List<Tensor>();
        for (long start = 0; start < n; start += chunk)
        {
            using var scope = NewDisposeScope();
            var (p, a) = quantize(flat.narrow(0, start, Math.Min(chunk, n - start)));
            packed.Add(p.MoveToOuterDisposeScope());
            absmax.Add(a.MoveToOuterDisposeScope());
        }
        return packed.Count == 1 ? (packed[0], absmax[0]) : (cat(packed, 0), cat(absmax, 0));
    }

    static Tensor EncodeCodes(FourBitType type, Tensor scaled)
    {
        var device = scaled.device;
        var thresholds = CodeTables.Float(FourBitCodebook.Name(type) + "/thresholds", device,
            () => FourBitCodebook.Thresholds(type));
        if (type == FourBitType.Nf4)
            return Blockwise.Encode(scaled, thresholds);
        // FP4 is sign-magnitude: the sign bit, then the code of the nearest magnitude.
        var magnitudeCodes = CodeTables.Bytes("fp4/magnitude-codes", device, FourBitCodebook.Fp4MagnitudeCodes);
        var magnitude = magnitudeCodes.index_select(0, bucketize(scaled.abs(), thresholds).view(-1)).view_as(scaled);
        var sign = scaled.lt(0).to(ScalarType.Byte) * 8;
        return magnitude.bitwise_or(sign);
    }

    /// <summary>(2k) codes 0..15 -> (k) bytes, element 2i in the high nibble of byte i.</summary>
    internal static Tensor PackNibbles(Tensor codes)
    {
        var pairs = codes.view(-1, 2);                                            // (nBytes, 2)
        return pairs.select(1, 0) * 16 + pairs.select(1, 1);
    }
}
