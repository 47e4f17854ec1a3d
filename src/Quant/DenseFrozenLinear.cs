using QLoraNet.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The unquantized frozen base: the weight (bf16/fp16/fp32) is a buffer with requires_grad false, so it moves with
/// .to(device) and is never trained. When it is already in the compute dtype, a plain linear keeps only a reference
/// to it for backward; otherwise the cast goes through <see cref="FrozenMatMul"/> so that no cast copy is kept.
/// </summary>
public sealed class DenseFrozenLinear : FrozenLinear
{
    Tensor weight;            // (out, in)

    public DenseFrozenLinear(Tensor weight, ScalarType computeDType, string name = "DenseFrozenLinear")
        : base(name, weight.shape[1], weight.shape[0], computeDType)
    {
        if (weight.dim() != 2)
            throw new ArgumentException($"a dense frozen linear needs a 2-D [out, in] weight, got [{string.Join(", ", weight.shape)}]");
        this.weight = weight.detach().requires_grad_(false).DetachFromDisposeScope(); // owned by the module
        AdoptDeviceOf(this.weight);
        RegisterComponents();
    }

    public override string FormatName => new DenseFormat(weight.dtype).ToString();

    public override long StorageBytes => weight.numel() * weight.element_size();

    public override Tensor DequantizeWeight(ScalarType dtype) => weight.to(dtype, copy: true);

    /// <summary>x (..., in) -> (..., out) in the compute dtype.</summary>
    public override Tensor forward(Tensor x) =>
        weight.dtype == ComputeDType
            ? nn.functional.linear(x.to(ComputeDType), weight)
            : FrozenMatMul.Apply(x, MatMulWeight, ComputeDType, BackwardHandles);

    /// <summary>The buffer as a stored weight; in the compute dtype already, its "dequantization" is the buffer itself.</summary>
    public override IQuantizedWeight MatMulWeight => new DenseWeight(weight);

    /// <summary>The dense buffer seen as a stored weight whose "dequantization" is a cast (a new handle on the
    /// buffer itself when the dtype is already the one asked for: the caller disposes the handle, not the storage).</summary>
    sealed record DenseWeight(Tensor Weight) : IQuantizedWeight
    {
        public long[] Shape => Weight.shape;
        public string FormatName => new DenseFormat(Weight.dtype).ToString();
        public long StorageBytes => Weight.numel() * Weight.element_size();
        public Tensor Dequantize(ScalarType dtype) => Weight.dtype == dtype ? Weight.alias() : Weight.to(dtype);
    }
}
