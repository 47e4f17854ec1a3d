using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A frozen base linear trained against the format it will be stored in (quantization-aware fine-tuning, the YAML
/// key <c>quantization.aware</c>): it holds the base as it is (dense) and computes its forward through the target
/// format's <see cref="IFakeQuantization"/>, so every decoder linear, adapted or not, sees the rounding it will get.
/// A LoRA adapter over it trains the merged weight instead of a separate low-rank path
/// (<see cref="Forward(Tensor, Tensor)"/> with its s·B·A), so that `merge --quantization &lt;format&gt;` stores
/// exactly what training saw (issue 19's QAT-LoRA; torchtune fake-quantizes the merged weight the same way).
/// </summary>
public sealed class QuantizationAwareLinear : FrozenLinear
{
    readonly FrozenLinear inner;
    readonly IFakeQuantization fake;

    public QuantizationAwareLinear(FrozenLinear inner, IFakeQuantization fake, string name = "QuantizationAwareLinear")
        : base(name, inner.InFeatures, inner.OutFeatures, inner.ComputeDType)
    {
        this.inner = inner;
        this.fake = fake;
        RegisterComponents();
        var stored = inner.buffers().Concat(inner.parameters()).FirstOrDefault();
        if (stored is not null) AdoptDeviceOf(stored);
    }

    /// <summary>The base as stored (dense).</summary>
    public FrozenLinear Inner => inner;

    /// <summary>The target format's forward.</summary>
    public IFakeQuantization FakeQuantization => fake;

    public override string FormatName => $"{inner.FormatName}, aware {fake.Name}";

    public override long StorageBytes => inner.StorageBytes;

    public override Tensor DequantizeWeight(ScalarType dtype) => inner.DequantizeWeight(dtype);

    /// <summary>x (..., in) -> (..., out) as the target format computes it from the base weight.</summary>
    public override Tensor forward(Tensor x) => Forward(x, null);

    /// <summary>The target format's forward over W + <paramref name="delta"/> [out, in] (a LoRA update), gradients
    /// reaching x and <paramref name="delta"/> straight through the rounding.</summary>
    public Tensor Forward(Tensor x, Tensor? delta)
    {
        using var scope = NewDisposeScope();
        var w = inner.DequantizeWeight(ScalarType.Float32);                            // (out, in), the fake quantizers run in fp32
        if (delta is not null) w = w + delta.to(ScalarType.Float32);
        return fake.Linear(x, w, ComputeDType).MoveToOuterDisposeScope();
    }
}
