using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen bias-free BitNet b1.58 linear (<see cref="TernaryFormat"/>; transformers' AutoBitLinear, offline mode):
/// the packed ternary weight and its bf16 scale are buffers; forward quantizes the activations to 8 bits per token and
/// sums them with additions and subtractions only (<see cref="TernaryMatMul"/>, by the path the caller's
/// <see cref="KernelSelection"/> chose) inside <see cref="FrozenMatMul"/>, whose backward goes to the input through
/// the dequantized weight (straight through the activation quantizer, as transformers' ActQuant does).
/// </summary>
public sealed class TernaryLinear : StoredWeightLinear<TernaryWeight>
{
    // Buffers (field names are the buffer names).
    Tensor weight;            // uint8 (out/4, in): Hugging Face's packed BitNet layout
    Tensor weight_scale;      // bf16 (1)

    readonly long[] shape;
    readonly ScalarType sourceDType;
    readonly KernelSelection kernels;

    public TernaryLinear(TernaryWeight stored, ScalarType computeDType, KernelSelection? kernels = null, string name = "TernaryLinear")
        : base(name, stored.Shape[1], stored.Shape[0], computeDType)
    {
        this.kernels = kernels ?? KernelSelection.Portable;
        shape = stored.Shape;
        sourceDType = stored.DType;
        weight = stored.Packed.DetachFromDisposeScope();  // the module owns its buffers from here
        weight_scale = stored.Scale.DetachFromDisposeScope();
        AdoptDeviceOf(weight);
        RegisterComponents();
    }

    public override TernaryWeight Stored => new(weight, weight_scale, shape, sourceDType);

    /// <summary>The path the product takes (for reports and tests).</summary>
    public TernaryMatMulPath MatMulPath => kernels.TernaryPathFor(weight.device);

    public override string FormatName => TernaryFormat.Name;

    /// <summary>The add/subtract product over the stored weight; forward is the default frozen matmul over it.</summary>
    public override IQuantizedWeight MatMulWeight => new Summed(Stored, MatMulPath, kernels.TernaryCuda);

    /// <summary>The stored weight as the frozen matmul sees it: its own add/subtract product, dequantized for backward.</summary>
    sealed record Summed(TernaryWeight Weight, TernaryMatMulPath Path, TernaryCudaKernel? Cuda) : IQuantizedMatMul
    {
        public long[] Shape => Weight.Shape;
        public string FormatName => Weight.FormatName;
        public long StorageBytes => Weight.StorageBytes;
        public Tensor Dequantize(ScalarType dtype) => Weight.Dequantize(dtype);
        public Tensor MatMul(Tensor x, ScalarType computeDType) => TernaryMatMul.Forward(x, Weight, computeDType, Path, Cuda);
    }
}
