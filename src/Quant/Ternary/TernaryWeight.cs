using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A weight in BitNet b1.58's ternary form (Ma et al. 2024, "The Era of 1-bit LLMs", eq. 1-3): one absmean scale
/// per matrix, every weight in {-1, 0, +1}, packed four to a byte exactly as Hugging Face's BitNet checkpoints store
/// them (transformers' integrations/bitnet pack_weights/unpack_weights), so a packed tensor is the checkpoint's:
/// <list type="bullet">
/// <item>scale = max(mean |W|, 1e-5) rounded to bf16 (the checkpoint's weight_scale is a bf16 [1]); the mean is
/// summed in fp64 so that it does not depend on the device's reduction order;</item>
/// <item>q = clamp(round(W / scale), -1, 1), half to even, in fp32;</item>
/// <item>packed uint8 [out/4, in]: byte row r, bits 2k..2k+1 (k = 0..3, least significant first) hold q + 1 of output
/// row k*out/4 + r; the 2-bit code 3 means nothing and is refused;</item>
/// <item>dequantized: q * scale in fp32, then cast.</item>
/// </list>
/// </summary>
/// <param name="Packed">uint8 [out/4, in].</param>
/// <param name="Scale">bf16 [1]: mean |W| (multiplies, as transformers' AutoBitLinear does).</param>
/// <param name="Shape">[out, in]; out is a multiple of 4.</param>
/// <param name="DType">dtype of the weight that was quantized.</param>
public sealed record TernaryWeight(Tensor Packed, Tensor Scale, long[] Shape, ScalarType DType) : IQuantizedWeight
{
    /// <summary>Lower bound of the absmean (transformers' WeightQuant: clamp(min=1e-5)).</summary>
    public const float MinScale = 1e-5f;

    /// <summary>Quantizes a 2-D weight [out, in] on its own device.</summary>
    public static TernaryWeight Quantize(Tensor weight, string? name = null)
    {
        QuantInputChecks.RequireFloat(weight, name);
        RequireShape(weight.shape, name);
        using var scope = NewDisposeScope();
        var w = weight.detach().to(ScalarType.Float32);
        var scale = AbsMeanScale(w, name);                                                // bf16 [1]
        var q = Codes(w, scale);                                                          // (out, in) fp32 in {-1, 0, 1}
        return new TernaryWeight(Pack(q).MoveToOuterDisposeScope(), scale.MoveToOuterDisposeScope(), weight.shape, weight.dtype);
    }

    /// <summary>bf16(max(mean |w|, 1e-5)) as a bf16 [1] tensor (the mean summed in fp64).</summary>
    internal static Tensor AbsMeanScale(Tensor w, string? name)
    {
        using var scope = NewDisposeScope();
        var mean = w.abs().to(ScalarType.Float64).mean().reshape(1);
        QuantInputChecks.RequireFinite(mean, name);
        return mean.to(ScalarType.Float32).clamp_min(MinScale).to(ScalarType.BFloat16).MoveToOuterDisposeScope();
    }

    /// <summary>clamp(round(w / scale), -1, 1) in fp32 (the fake-ternary codes quantization-aware training uses too).</summary>
    internal static Tensor Codes(Tensor w, Tensor scale) =>
        (w.to(ScalarType.Float32) / scale.to(ScalarType.Float32)).round().clamp(-1, 1);

    /// <summary>{-1, 0, 1} values [out, in] (any dtype) -> uint8 [out/4, in] in the Hugging Face BitNet layout.</summary>
    public static Tensor Pack(Tensor q)
    {
        using var scope = NewDisposeScope();
        long quarter = q.shape[0] / 4;
        var u = (q + 1).to(ScalarType.Byte);                                              // (out, in) in {0, 1, 2}
        var packed = u.narrow(0, 0, quarter).clone();
        for (int k = 1; k < 4; k++)
            packed.bitwise_or_(u.narrow(0, k * quarter, quarter).bitwise_left_shift(2 * k));
        return packed.MoveToOuterDisposeScope();                                          // (out/4, in)
    }

    /// <summary>The ternary values as fp32 [out, in] (torch ops).</summary>
    public Tensor Unpack() => Unpack(Packed);

    /// <summary>uint8 [out/4, in] -> fp32 {-1, 0, 1} [out, in]; block k of out/4 rows from bits 2k..2k+1.</summary>
    public static Tensor Unpack(Tensor packed)
    {
        using var scope = NewDisposeScope();
        var blocks = Enumerable.Range(0, 4)
            .Select(k => packed.bitwise_right_shift(2 * k).bitwise_and(3))
            .ToArray();
        var q = cat(blocks, 0).to(ScalarType.Float32) - 1;                                // (out, in)
        return q.MoveToOuterDisposeScope();
    }

    /// <summary>q * scale in fp32, then cast.</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return (Unpack() * Scale.to(ScalarType.Float32)).to(dtype).MoveToOuterDisposeScope();
    }

    public TernaryWeight To(Device device) => this with { Packed = Packed.to(device), Scale = Scale.to(device) };

    /// <summary>2 bits a weight plus the 2-byte scale.</summary>
    public long StorageBytes => Packed.numel() + 2;

    public string FormatName => TernaryFormat.Name;

    /// <summary>
    /// A packed tensor read from a checkpoint holds only the codes 0, 1, 2 (value + 1): code 3 would be a weight of
    /// +2, outside {-1, 0, 1}. One bool comes back to the host.
    /// </summary>
    public static void RequireTernaryCodes(Tensor packed, string key)
    {
        using var scope = NewDisposeScope();
        var bad = zeros_like(packed, ScalarType.Bool);
        for (int k = 0; k < 4; k++)
            bad = bad.logical_or(packed.bitwise_right_shift(2 * k).bitwise_and(3).eq(3));
        if (bad.any().item<bool>())
        {
            var at = bad.nonzero()[0];
            throw new InvalidDataException($"ternary tensor '{key}' holds the 2-bit code 3 (a weight of +2, outside {{-1, 0, 1}}) at byte [{at[0].item<long>()}, {at[1].item<long>()}]; the checkpoint is corrupt or not BitNet b1.58");
        }
    }

    /// <summary>A 2-D [out, in] weight whose out is a multiple of 4 (four rows share a byte).</summary>
    internal static void RequireShape(long[] shape, string? name)
    {
        string what = name is null ? "weight" : $"tensor '{name}'";
        if (shape.Length != 2)
            throw new ArgumentException($"cannot quantize {what} to ternary: expected a 2-D [out, in] weight, got [{string.Join(", ", shape)}]");
        if (shape[0] % 4 != 0)
            throw new ArgumentException($"cannot quantize {what} to ternary: out_features {shape[0]} is not a multiple of 4 (BitNet packs four output rows into a byte)");
    }
}
