using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A weight in HQQ (<see cref="HqqFormat"/>), made as hqq's Quantizer.quantize makes it with the settings of
/// hqq_base_quant_config (channel_wise, optimize, axis=1, round_zero for 4 bits), then held as HQQLinear holds it:
/// <list type="bullet">
/// <item>W [out, in] flattened row-major into groups G [rows = out*in/g, g], fp32;</item>
/// <item>per group: s = (2^b - 1) / (max - min) (Python's int / tensor is reciprocal(max - min) * (2^b - 1)), 1 where
/// max - min &lt;= 1e-4, clamped at 2e4; z = -min * s, rounded for 4 bits;</item>
/// <item>z optimized by <see cref="HqqSolver"/>; q = clamp(round(G s + z), 0, 2^b - 1);</item>
/// <item>stored: the packed codes (<see cref="HqqBitPack"/>), Scale = 1 / s and Zero = z, both cast to fp16 (hqq's
/// default compute dtype, which HQQLinear casts its meta-data to);</item>
/// <item>dequantized: (q - Zero) * Scale in fp32 from the fp16 values, reshaped to [out, in], then cast (hqq computes
/// it in the compute dtype; fp32 is the more exact of the two).</item>
/// </list>
/// </summary>
/// <param name="Packed">uint8 (int32 for 3 bits) packed codes.</param>
/// <param name="Scale">fp16 [rows, 1]: 1 / s.</param>
/// <param name="Zero">fp16 [rows, 1].</param>
public sealed record HqqWeight(HqqFormat Spec, Tensor Packed, Tensor Scale, Tensor Zero, long[] Shape, ScalarType DType) : IQuantizedWeight
{
    /// <summary>Number of groups (rows of the code matrix).</summary>
    public long Rows => QuantInputChecks.Numel(Shape) / Spec.GroupSize;

    public static HqqWeight Quantize(Tensor weight, HqqFormat spec, string? name = null) => Quantize(weight, spec, name, out _);

    /// <summary>Quantizes on the weight's own device; <paramref name="iterations"/> = solver iterations run.</summary>
    public static HqqWeight Quantize(Tensor weight, HqqFormat spec, string? name, out int iterations)
    {
        QuantInputChecks.RequireFloat(weight, name);
        long rows = RequireShape(weight.shape, spec, name);
        using var scope = NewDisposeScope();
        var g = weight.detach().to(ScalarType.Float32).reshape(rows, spec.GroupSize);      // (rows, g)
        var min = g.amin([1], keepdim: true);
        var max = g.amax([1], keepdim: true);
        QuantInputChecks.RequireFinite(max - min, name);
        int maxCode = (1 << spec.Bits) - 1;
        var range = max - min;
        var scale = range.reciprocal() * (float)maxCode;                                   // (rows, 1) inverse scale
        scale = where(range.abs().le(1e-4f), ones_like(scale), scale).clamp_max(2e4f);
        var zero = -min * scale;
        if (spec.Bits == 4) zero = zero.round();                                           // hqq: round_zero for 4 bits
        zero = HqqSolver.OptimizeZero(g, scale, zero, maxCode, out iterations);
        var q = (g * scale + zero).round().clamp(0, maxCode);                              // (rows, g)
        var packed = HqqBitPack.Pack(q, spec.Bits);
        return new HqqWeight(spec, packed.MoveToOuterDisposeScope(),
            scale.reciprocal().to(ScalarType.Float16).MoveToOuterDisposeScope(), zero.to(ScalarType.Float16).MoveToOuterDisposeScope(),
            weight.shape, weight.dtype);
    }

    /// <summary>The codes as fp32 [rows, g].</summary>
    public Tensor Codes() => HqqBitPack.Unpack(Packed, Spec.Bits, Rows);

    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var dense = (Codes() - Zero.to(ScalarType.Float32)) * Scale.to(ScalarType.Float32);   // (rows, g)
        return dense.reshape(Shape).to(dtype).MoveToOuterDisposeScope();
    }

    public HqqWeight To(Device device) => this with { Packed = Packed.to(device), Scale = Scale.to(device), Zero = Zero.to(device) };

    public long StorageBytes => Packed.numel() * Packed.element_size() + Scale.numel() * Scale.element_size() + Zero.numel() * Zero.element_size();

    public string FormatName => Spec.ToString();

    /// <summary>The group count of a weight of <paramref name="shape"/>, or a one-line error when the groups do not tile it.</summary>
    internal static long RequireShape(long[] shape, HqqFormat spec, string? name)
    {
        string what = name is null ? "weight" : $"tensor '{name}'";
        if (shape.Length != 2)
            throw new ArgumentException($"cannot quantize {what} to {spec}: expected a 2-D [out, in] weight, got [{string.Join(", ", shape)}]");
        long numel = shape[0] * shape[1];
        if (numel % spec.GroupSize != 0)
            throw new ArgumentException($"cannot quantize {what} [{string.Join(", ", shape)}] to {spec}: group size {spec.GroupSize} does not divide its {numel} weights; pick another -g");
        long rows = numel / spec.GroupSize;
        if (HqqBitPack.RowsProblem(spec.Bits, rows) is { } p)
            throw new ArgumentException($"cannot quantize {what} [{string.Join(", ", shape)}] to {spec}: {p}; pick another -g");
        return rows;
    }
}
