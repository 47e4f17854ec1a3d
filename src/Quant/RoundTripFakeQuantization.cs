using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The fake quantization of every format that quantizes a weight alone (<see cref="BaseFormat.FakeQuantization"/>'s
/// default): the weight goes through the format's own <see cref="BaseFormat.RoundTrip"/> (quantize with the format's
/// code, dequantize), so training computes bit for bit with the weights `merge --quantization FORMAT`, a load in the
/// format, or `export --type q4_0` produce; the input is left as it is. A format that also rounds activations
/// overrides <see cref="Input"/> (<see cref="TernaryFakeQuantization"/>).
/// </summary>
public class RoundTripFakeQuantization : IFakeQuantization
{
    public RoundTripFakeQuantization(BaseFormat format)
    {
        if (format.NeedsCalibration)
            throw new ArgumentException($"{format} needs calibration activations; quantization-aware training takes a format that quantizes a weight alone");
        if (format.KeepsCheckpointDType)
            throw new ArgumentException("'none' keeps the weights as they are; there is nothing to be aware of");
        Format = format;
    }

    /// <summary>The format whose round trip this is.</summary>
    public BaseFormat Format { get; }

    public string Name => Format.ToString();

    public Tensor Weight(Tensor weight, string? name = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return Format.RoundTrip(weight.detach().to(ScalarType.Float32), name).MoveToOuterDisposeScope();
    }

    public virtual bool QuantizesInput => false;

    public virtual Tensor Input(Tensor x) => x.to(ScalarType.Float32);
}
