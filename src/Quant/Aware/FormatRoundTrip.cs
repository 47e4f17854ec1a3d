using static TorchSharp.torch;

namespace QLoraNet.Quant.Aware;

/// <summary>The round trip through a base format: <see cref="BaseFormat.RoundTrip"/> (quantize with the format's own
/// code, dequantize), so the fake quantization is bit for bit what `merge --quantization FORMAT` then a load computes.</summary>
public sealed class FormatRoundTrip : IWeightRoundTrip
{
    public FormatRoundTrip(BaseFormat format)
    {
        if (format.NeedsCalibration)
            throw new ArgumentException($"{format} needs calibration activations; quantization-aware training takes a format that quantizes a weight alone (nf4, int4-g32, q4_0, ...)");
        if (format is DenseFormat { DType: null })
            throw new ArgumentException("'none' keeps the weights as they are; there is nothing to be aware of");
        Format = format;
    }

    public BaseFormat Format { get; }

    public string Name => Format.ToString();

    public Tensor RoundTrip(Tensor weight, string weightName) => Format.RoundTrip(weight, weightName);
}
