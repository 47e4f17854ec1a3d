using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen base linear trained against the format it will be stored in (quantization-aware fine-tuning, the YAML
/// key <c>quantization.aware</c>): it holds the base as it is (dense) and computes y = Input(x) @ Weight(W)^T through
/// the target format's <see cref="IFakeQuantization"/>, so every decoder linear, adapted or not, sees the rounding it
/// will get. Forward and backward go through <see cref="FrozenMatMul"/>: the fake weight is made in fp32, used and
/// dropped, and made again for dx = dy @ Weight(W) (straight through the input's rounding), so nothing beyond the
/// stored base is kept between them. A LoRA adapter over it (QLoraNet.Peft.LoraLinear) trains inside the merged
/// weight, fake(W + s·B·A), with a function of its own built from <see cref="RoundTrip"/> and
/// <see cref="FakeInput"/> (issue 19's QAT-LoRA; torchtune fake-quantizes the merged weight the same way).
/// </summary>
public sealed class QuantizationAwareLinear : FrozenLinear
{
    readonly FrozenLinear inner;
    readonly IFakeQuantization fake;
    readonly string? weightName;

    /// <param name="weightName">the checkpoint key of the weight, for errors of the round trip (a q4_0 row length).</param>
    public QuantizationAwareLinear(FrozenLinear inner, IFakeQuantization fake, string? weightName = null, string name = "QuantizationAwareLinear")
        : base(name, inner.InFeatures, inner.OutFeatures, inner.ComputeDType)
    {
        this.inner = inner;
        this.fake = fake;
        this.weightName = weightName;
        RegisterComponents();
        var stored = inner.buffers().Concat(inner.parameters()).FirstOrDefault();
        if (stored is not null) AdoptDeviceOf(stored);
    }

    /// <summary>The base as stored (dense).</summary>
    public FrozenLinear Inner => inner;

    /// <summary>The target format's fake quantization.</summary>
    public IFakeQuantization FakeQuantization => fake;

    public override string FormatName => $"{inner.FormatName}, aware {fake.Name}";

    public override long StorageBytes => inner.StorageBytes;

    /// <summary>The base as stored (what a merge starts from), not its round trip.</summary>
    public override Tensor DequantizeWeight(ScalarType dtype) => inner.DequantizeWeight(dtype);

    /// <summary><paramref name="weight"/> [out, in] (the base, or the base plus a LoRA update) as the target format
    /// stores it: fp32, no autograd.</summary>
    public Tensor RoundTrip(Tensor weight) => fake.Weight(weight, weightName);

    /// <summary>x (..., in) as the target format's matmul sees it, fp32, no autograd.</summary>
    public Tensor FakeInput(Tensor x) => fake.Input(x);

    /// <summary>x (..., in) -> (..., out) in the compute dtype, as the target format computes it from the base weight.</summary>
    public override Tensor forward(Tensor x) => FrozenMatMul.Apply(x, new FakeWeight(this), ComputeDType, BackwardHandles);

    /// <summary>The base's round trip as the frozen matmul sees it: made anew in each forward and backward.</summary>
    sealed record FakeWeight(QuantizationAwareLinear Linear) : IQuantizedMatMul
    {
        public long[] Shape => [Linear.OutFeatures, Linear.InFeatures];
        public string FormatName => Linear.FormatName;
        public long StorageBytes => Linear.StorageBytes;

        public Tensor Dequantize(ScalarType dtype)
        {
            using var scope = NewDisposeScope();
            var w = Linear.inner.DequantizeWeight(ScalarType.Float32);                   // (out, in), the round trip runs in fp32
            return Linear.RoundTrip(w).to(dtype).MoveToOuterDisposeScope();
        }

        public Tensor MatMul(Tensor x, ScalarType computeDType)
        {
            using var scope = NewDisposeScope();
            var xq = Linear.fake.QuantizesInput ? Linear.FakeInput(x).to(computeDType) : x.to(computeDType);
            return nn.functional.linear(xq, Dequantize(computeDType)).MoveToOuterDisposeScope();   // (..., out)
        }
    }
}
