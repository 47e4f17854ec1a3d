using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen linear whose buffers hold one stored weight value (<typeparamref name="TWeight"/>: NF4, int4, HQQ, GPTQ,
/// ...). The value is rebuilt from the current buffers on every use (<see cref="Stored"/>), so after a move to
/// another device it sees the moved tensors; the size, the dense weight and the default forward come from it. The
/// default forward is <see cref="FrozenMatMul"/> (dequantize for the product, again for backward, nothing kept), which
/// also runs a product of the format's own when the weight has one (<see cref="IQuantizedMatMul"/>: W8A8's weight);
/// linears that pass the product a selected kernel (LLM.int8()'s int8 GEMM, ternary, NF4) override
/// <see cref="MatMulWeight"/> with the stored weight wrapped in that kernel, so forward, backward and the explicit layer
/// backward's tape (<see cref="FrozenLinear.Record"/>) all multiply with the same thing.
/// </summary>
public abstract class StoredWeightLinear<TWeight> : FrozenLinear where TWeight : IQuantizedWeight
{
    protected StoredWeightLinear(string name, long inFeatures, long outFeatures, ScalarType computeDType)
        : base(name, inFeatures, outFeatures, computeDType) { }

    /// <summary>The stored weight as a value, rebuilt from the current buffers.</summary>
    public abstract TWeight Stored { get; }

    public override string FormatName => Stored.FormatName;

    public override long StorageBytes => Stored.StorageBytes;

    public override Tensor DequantizeWeight(ScalarType dtype) => Stored.Dequantize(dtype);

    /// <summary>The stored weight itself; linears that select a kernel for the product wrap it.</summary>
    public override IQuantizedWeight MatMulWeight => Stored;

    /// <summary>x (..., in) -> (..., out) in the compute dtype.</summary>
    public override Tensor forward(Tensor x) => FrozenMatMul.Apply(x, MatMulWeight, ComputeDType, BackwardHandles);
}
