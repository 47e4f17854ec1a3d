using TorchSharp;
using static TorchSharp.torch;
using QLoraNet.Quant.Kernels;

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

    public long Numel => QuantInputChecks.Numel(Shape);

    public bool IsDoubleQuantized => Scales is DoubleQuantizedScales;

    /// <summary>
    /// Quantizes <paramref name="weight"/> (fp32/bf16/fp16, any device) with torch ops on its own device.
    /// <paramref name="name"/> only labels errors (NaN/Inf, bad blocksize).
    /// </summary>
    public static FourBitWeight Quantize(Tensor weight, FourBitType type, int blockSize = DefaultBlockSize,
        bool doubleQuant = false, int nestedBlockSize = DoubleQuantizedScales.DefaultNestedBlockSize, string? name = null)
    {
        QuantInputChecks.RequireFiniteFloat(weight, name);
        long n = weight.numel();
        QuantInputChecks.RequireBlockSize(blockSize, n, name);

        using var scope = NewDisposeScope();
        var flat = weight.detach().reshape(-1).to(ScalarType.Float32);           // (n)
        var (scaled, absmax) = Blockwise.ScaleByAbsmax(Blockwise.ToBlocks(flat, blockSize));
        var codes = EncodeCodes(type, scaled).view(-1);                           // (nBlocks * blockSize) uint8
        // An odd n keeps one padding code (the code of 0.0) in the last low nibble, as bitsandbytes does.
        var packed = PackNibbles(codes.narrow(0, 0, n + n % 2)).MoveToOuterDisposeScope();
        BlockScales scales = doubleQuant
            ? DoubleQuantizedScales.Quantize(absmax, nestedBlockSize)
            : new PlainScales(absmax);
        foreach (var t in scales.Tensors) t.MoveToOuterDisposeScope();
        return new FourBitWeight(type, packed, scales, weight.shape, blockSize, weight.dtype);
    }

    /// <summary>
    /// The dense weight of <see cref="Shape"/> in <paramref name="dtype"/>. On CUDA this is the fused kernel
    /// (<see cref="FourBitCudaKernel"/>: same arithmetic, one pass over memory, equal bit for bit); elsewhere, or
    /// when the kernel cannot run, the torch-op path.
    /// </summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        if (Packed.device_type == DeviceType.CUDA && TryDequantizeWithKernel(dtype) is { } fast) return fast;
        return DequantizeWithTorchOps(dtype);
    }

    /// <summary>The torch-op path: the reference for the CUDA kernel and the path on CPU.</summary>
    public Tensor DequantizeWithTorchOps(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var pairs = CodeTables.NibblePairs(FourBitCodebook.Name(Type), Packed.device, FourBitCodebook.Values(Type));
        var values = pairs.index_select(0, Packed.to(ScalarType.Int64)).view(-1); // (2 * nBytes) fp32
        var dense = Blockwise.MultiplyByBlockScale(values, Scales.Dequantize(), BlockSize, Numel);
        return dense.view(Shape).to(dtype).MoveToOuterDisposeScope();
    }

    Tensor? TryDequantizeWithKernel(ScalarType dtype)
    {
        var codebook = CodeTables.Float(FourBitCodebook.Name(Type) + "/values", Packed.device, () => FourBitCodebook.Values(Type));
        var dense = Scales switch
        {
            PlainScales p => FourBitCudaKernel.TryDequantize(Packed, p.Absmax, null, null, null, 0f, codebook, Numel, BlockSize, 0, dtype),
            DoubleQuantizedScales d => FourBitCudaKernel.TryDequantize(Packed, null, d.Codes, d.NestedAbsmax,
                CodeTables.Float("dynamic/values", Packed.device, DynamicMap.Values), d.Offset, codebook, Numel, BlockSize, d.NestedBlockSize, dtype),
            _ => null,
        };
        if (dense is null) return null;
        using (dense) return dense.view(Shape);
    }

    /// <summary>Dequantizes to the dtype the weight had before quantization.</summary>
    public Tensor Dequantize() => Dequantize(DType);

    public FourBitWeight To(Device device) => this with { Packed = Packed.to(device), Scales = Scales.To(device) };

    /// <summary>Packed codes plus scales (the 16-entry codebook is shared and not counted).</summary>
    public long StorageBytes => Packed.shape[0] + Scales.StorageBytes;

    /// <summary>"nf4", "nf4-dq", "fp4-b128", ...: the same spelling <see cref="QuantSpec.Parse"/> reads.</summary>
    public string FormatName => new FourBitSpec(Type, BlockSize, IsDoubleQuantized,
        (Scales as DoubleQuantizedScales)?.NestedBlockSize ?? DoubleQuantizedScales.DefaultNestedBlockSize).ToString();

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
