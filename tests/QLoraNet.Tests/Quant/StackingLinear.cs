using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Quant;

/// <summary>
/// A frozen linear whose weight joins others in one GEMM (<see cref="IQuantizedWeight.StacksInto"/>) wherever it is:
/// the CUDA NF4 kernel's arrangement (<see cref="FrozenLinearGroup"/>) on the CPU, where the real weights keep one
/// product per linear, so that the CPU tests run that path. Everything else is the wrapped linear's.
/// </summary>
internal sealed class StackingLinear : FrozenLinear
{
    readonly FrozenLinear inner;

    public StackingLinear(FrozenLinear inner) : base(inner.GetName(), inner.InFeatures, inner.OutFeatures, inner.ComputeDType)
    {
        this.inner = inner;
        register_module("inner", inner);
    }

    public override string FormatName => inner.FormatName;
    public override long StorageBytes => inner.StorageBytes;
    public override Tensor DequantizeWeight(ScalarType dtype) => inner.DequantizeWeight(dtype);
    public override IQuantizedWeight? MatMulWeight => inner.MatMulWeight is { } w ? new Stacking(w) : null;
    public override Tensor forward(Tensor x) => FrozenMatMul.Apply(x, MatMulWeight!, ComputeDType, BackwardHandles);

    sealed record Stacking(IQuantizedWeight Weight) : IQuantizedWeight
    {
        public long[] Shape => Weight.Shape;
        public string FormatName => Weight.FormatName;
        public long StorageBytes => Weight.StorageBytes;
        public Tensor Dequantize(ScalarType dtype) => Weight.Dequantize(dtype);
        public bool StacksInto(ScalarType dtype) => true;
    }
}
