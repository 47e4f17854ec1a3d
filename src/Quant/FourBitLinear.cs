using QLoraNet.Kernels;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen bias-free linear whose weight is stored in NF4/FP4 (QLoRA's base layer). The packed codes and scales are
/// buffers, so they move with .to(device); forward runs <see cref="FrozenMatMul"/>, which materialises the weight in
/// the compute dtype only for the duration of the matmul, by the path the caller's <see cref="KernelSelection"/> chose.
/// </summary>
public sealed class FourBitLinear : StoredWeightLinear<FourBitWeight>
{
    // Buffers (field names are the buffer names).
    Tensor weight;            // uint8 (ceil(numel / 2)): packed codes
    Tensor absmax;            // fp32 (nBlocks), or uint8 (nBlocks) when double-quantized
    Tensor? nested_absmax;    // fp32 (ceil(nBlocks / nestedBlockSize)) when double-quantized

    readonly FourBitType type;
    readonly int blockSize;
    readonly long[] shape;
    readonly ScalarType sourceDType;
    readonly float nestedOffset;
    readonly int nestedBlockSize;
    readonly KernelSelection kernels;

    /// <param name="kernels">how to dequantize; null = <see cref="KernelSelection.Portable"/>.</param>
    public FourBitLinear(FourBitWeight stored, ScalarType computeDType, KernelSelection? kernels = null, string name = "FourBitLinear")
        : base(name, Matrix(stored.Shape)[1], Matrix(stored.Shape)[0], computeDType)
    {
        this.kernels = kernels ?? KernelSelection.Portable;
        type = stored.Type;
        blockSize = stored.BlockSize;
        shape = stored.Shape;
        sourceDType = stored.DType;
        weight = stored.Packed;
        switch (stored.Scales)
        {
            case PlainScales plain:
                absmax = plain.Absmax;
                break;
            case DoubleQuantizedScales dq:
                absmax = dq.Codes;
                nested_absmax = dq.NestedAbsmax;
                nestedOffset = dq.Offset;
                nestedBlockSize = dq.NestedBlockSize;
                break;
            default:
                throw new ArgumentException($"unknown block scales {stored.Scales.GetType().Name}");
        }
        foreach (var t in new[] { weight, absmax, nested_absmax }.OfType<Tensor>())
            t.DetachFromDisposeScope(); // the module owns its buffers from here
        AdoptDeviceOf(weight);
        RegisterComponents();
    }

    static long[] Matrix(long[] shape) => shape.Length == 2
        ? shape
        : throw new ArgumentException($"a 4-bit linear needs a 2-D [out, in] weight, got [{string.Join(", ", shape)}]");

    /// <summary>The stored weight as a value, rebuilt from the current buffers (they change identity on .to()).</summary>
    public override FourBitWeight Stored => new(type, weight, Scales, shape, blockSize, sourceDType);

    BlockScales Scales => nested_absmax is null
        ? new PlainScales(absmax)
        : new DoubleQuantizedScales(absmax, nested_absmax, nestedOffset, nestedBlockSize);

    /// <summary>The path <see cref="DequantizeWeight"/> takes to the compute dtype (for reports and tests).</summary>
    public FourBitDequantPath DequantPath => kernels.PathFor(Stored, ComputeDType);

    public override Tensor DequantizeWeight(ScalarType dtype) => kernels.Dequantize(Stored, dtype);

    /// <summary>The stored weight with the selected dequantization path; forward is the default frozen matmul over it.</summary>
    public override IQuantizedWeight MatMulWeight => new Selected(Stored, kernels);

    /// <summary>The stored weight dequantized by the selected path, as the frozen matmul sees it.</summary>
    sealed record Selected(FourBitWeight Weight, KernelSelection Kernels) : IQuantizedWeight
    {
        public long[] Shape => Weight.Shape;
        public string FormatName => Weight.FormatName;
        public long StorageBytes => Weight.StorageBytes;
        public Tensor Dequantize(ScalarType dtype) => Kernels.Dequantize(Weight, dtype);
        public void DequantizeInto(Tensor destination) => Kernels.DequantizeInto(Weight, destination);
        // The CUDA kernel writes in place; elsewhere a copy would cost what one GEMM saves (and the CPU keeps the
        // reference arrangement: each linear its own product).
        public bool StacksInto(ScalarType dtype) => Kernels.PathFor(Weight, dtype) == FourBitDequantPath.CudaPtx;
    }
}
