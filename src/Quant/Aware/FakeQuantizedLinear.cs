using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.Aware;

/// <summary>
/// A frozen linear that computes with its base's weight as a deployment quantization would hold it:
/// W = RoundTrip(base.DequantizeWeight()), recomputed in each forward and backward (no extra copy is kept), so a
/// quantization-aware run sees the linears it does not adapt exactly as the merged-and-quantized model will.
/// Its stored form and storage are the base's; <see cref="DequantizeWeight"/> returns the round-tripped weight.
/// </summary>
public sealed class FakeQuantizedLinear : FrozenLinear
{
    readonly FrozenLinear base_layer;
    readonly IWeightRoundTrip roundTrip;
    readonly string weightName;

    /// <param name="weightName">the checkpoint key of the weight (per-tensor policies decide by it).</param>
    public FakeQuantizedLinear(FrozenLinear baseLayer, IWeightRoundTrip roundTrip, string weightName)
        : base(nameof(FakeQuantizedLinear), baseLayer.InFeatures, baseLayer.OutFeatures, baseLayer.ComputeDType)
    {
        base_layer = baseLayer;
        this.roundTrip = roundTrip;
        this.weightName = weightName;
        RegisterComponents();
        var stored = baseLayer.buffers().Concat(baseLayer.parameters()).FirstOrDefault();
        if (stored is not null) AdoptDeviceOf(stored);
    }

    public FrozenLinear BaseLayer => base_layer;

    public override string FormatName => $"{base_layer.FormatName} as {roundTrip.Name}";

    public override long StorageBytes => base_layer.StorageBytes;

    public override Tensor DequantizeWeight(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var dense = base_layer.DequantizeWeight(ScalarType.Float32);
        return roundTrip.RoundTrip(dense, weightName).to(dtype).MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor x) => FrozenMatMul.apply(x, new RoundTripped(this), ComputeDType, BackwardHandles);

    /// <summary>The round-tripped weight as the frozen matmul sees it.</summary>
    sealed record RoundTripped(FakeQuantizedLinear Linear) : IQuantizedWeight
    {
        public long[] Shape => [Linear.OutFeatures, Linear.InFeatures];
        public string FormatName => Linear.FormatName;
        public long StorageBytes => Linear.StorageBytes;
        public Tensor Dequantize(ScalarType dtype) => Linear.DequantizeWeight(dtype);
    }
}
