using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A weight in linear (uniform) quantization, the textbook scheme (e.g. Jacob et al. 2018; Nagel et al. 2021,
/// "A White Paper on Neural Network Quantization"): the weight [out, in] is viewed as groups (one for per-tensor, one
/// per row for per-channel, GroupSize consecutive weights of a row for per-group), and each group g stores a scale
/// s_g and, when asymmetric, an integer zero point z_g.
/// <list type="bullet">
/// <item>symmetric: s = max|r| / QMax, q = clamp(round(r / s), QMin, QMax)</item>
/// <item>asymmetric: with rmin = min(min r, 0), rmax = max(max r, 0) (the range always holds 0, so zero is exact),
/// s = (rmax - rmin) / (QMax - QMin), z = clamp(round(QMin - rmin / s), QMin, QMax), q = clamp(round(r / s + z), QMin, QMax)</item>
/// <item>dequantize: r' = (q - z) * s, in fp32</item>
/// </list>
/// round() is half-to-even (torch.round, MathF.Round); an all-zero group gets s = 1. All arithmetic is fp32.
/// int4 and int3 codes are packed two per byte like NF4 (element 2k in the high nibble, two's complement nibbles;
/// int3 codes [-4, 3] use 3 bits of each nibble: held at 4 bits per weight, a 3-bit packing is a storage job).
/// </summary>
/// <param name="Spec">bits, granularity, group size, symmetric.</param>
/// <param name="Codes">int8 (numel) for 8 bits; uint8 (ceil(numel / 2)) packed nibbles for 4 bits.</param>
/// <param name="Scales">fp32 (groups).</param>
/// <param name="ZeroPoints">int8 (groups) when asymmetric, else null.</param>
/// <param name="Shape">the dense shape [out, in].</param>
/// <param name="DType">dtype of the weight that was quantized.</param>
public sealed record LinearQuantWeight(
    LinearQuantFormat Spec, Tensor Codes, Tensor Scales, Tensor? ZeroPoints, long[] Shape, ScalarType DType) : IQuantizedWeight
{
    public long Numel => QuantInputChecks.Numel(Shape);

    /// <summary>Quantizes a 2-D weight [out, in] with torch ops on its own device.</summary>
    public static LinearQuantWeight Quantize(Tensor weight, LinearQuantFormat spec, string? name = null)
    {
        QuantInputChecks.RequireFloat(weight, name);
        long groupLength = GroupLength(spec, weight.shape, name);

        using var scope = NewDisposeScope();
        var groups = weight.detach().to(ScalarType.Float32).reshape(-1, groupLength);   // (groups, groupLength)
        Tensor scale, q;
        Tensor? zero = null;
        if (spec.Symmetric)
        {
            var max = groups.abs().amax([1]);                                           // (groups)
            QuantInputChecks.RequireFinite(max, name);
            scale = NonZero(max / (float)spec.QMax);
            q = (groups / scale.unsqueeze(1)).round();
        }
        else
        {
            var rmin = groups.amin([1]).clamp_max(0);
            var rmax = groups.amax([1]).clamp_min(0);
            QuantInputChecks.RequireFinite(rmax - rmin, name);
            scale = NonZero((rmax - rmin) / (float)(spec.QMax - spec.QMin));
            zero = (spec.QMin - rmin / scale).round().clamp(spec.QMin, spec.QMax);      // (groups)
            q = (groups / scale.unsqueeze(1) + zero.unsqueeze(1)).round();
        }
        var codes = q.clamp(spec.QMin, spec.QMax).to(ScalarType.Int8).view(-1);         // (numel)
        var stored = spec.Bits <= 4 ? PackInt4(codes) : codes;
        return new LinearQuantWeight(spec, stored.MoveToOuterDisposeScope(), scale.MoveToOuterDisposeScope(),
            zero?.to(ScalarType.Int8).MoveToOuterDisposeScope(), weight.shape, weight.dtype);
    }

    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var q = Spec.Bits <= 4 ? UnpackInt4() : Codes.to(ScalarType.Float32);           // (numel) fp32
        var groups = q.view(Scales.shape[0], -1);                                        // (groups, groupLength)
        if (ZeroPoints is not null)
            groups = groups - ZeroPoints.to(ScalarType.Float32).unsqueeze(1);
        var dense = groups * Scales.unsqueeze(1);
        return dense.view(Shape).to(dtype).MoveToOuterDisposeScope();
    }

    public Tensor Dequantize() => Dequantize(DType);

    public LinearQuantWeight To(Device device) =>
        this with { Codes = Codes.to(device), Scales = Scales.to(device), ZeroPoints = ZeroPoints?.to(device) };

    /// <summary>Codes, fp32 scales and int8 zero points.</summary>
    public long StorageBytes => Codes.shape[0] + 4 * Scales.shape[0] + (ZeroPoints?.shape[0] ?? 0);

    public string FormatName => Spec.ToString();

    /// <summary>Number of weights sharing one scale; checks that the groups tile the weight.</summary>
    internal static long GroupLength(LinearQuantFormat spec, long[] shape, string? name)
    {
        string what = name is null ? "weight" : $"tensor '{name}'";
        if (shape.Length != 2)
            throw new ArgumentException($"cannot quantize {what} to {spec}: expected a 2-D [out, in] weight, got [{string.Join(", ", shape)}]");
        return spec.Granularity switch
        {
            QuantGranularity.PerTensor => shape[0] * shape[1],
            QuantGranularity.PerChannel => shape[1],
            _ when spec.GroupSize <= 0 || shape[1] % spec.GroupSize != 0 =>
                throw new ArgumentException($"cannot quantize {what} to {spec}: group size {spec.GroupSize} does not divide in_features {shape[1]}; pick a divisor"),
            _ => spec.GroupSize,
        };
    }

    /// <summary>A zero scale (all-zero group) becomes 1 so that r / s stays finite.</summary>
    static Tensor NonZero(Tensor scale) => where(scale.eq(0), ones_like(scale), scale);

    /// <summary>int8 codes in [-8, 7] (n) -> uint8 (ceil(n/2)), two's complement nibbles, element 2k high.</summary>
    static Tensor PackInt4(Tensor codes)
    {
        var nibbles = codes.bitwise_and(0xF).to(ScalarType.Byte);
        if (nibbles.shape[0] % 2 == 1)
            nibbles = nn.functional.pad(nibbles, [0, 1]);
        return FourBitWeight.PackNibbles(nibbles);
    }

    /// <summary>Value of each two's complement nibble: 0..7, then -8..-1.</summary>
    static readonly float[] SignedNibbles = Enumerable.Range(0, 16).Select(v => (float)(v >= 8 ? v - 16 : v)).ToArray();

    Tensor UnpackInt4()
    {
        var pairs = CodeTables.NibblePairs("int4", Codes.device, SignedNibbles);
        return pairs.index_select(0, Codes.to(ScalarType.Int64)).view(-1).narrow(0, 0, Numel);
    }
}
