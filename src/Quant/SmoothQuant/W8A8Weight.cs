using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant.SmoothQuant;

/// <summary>
/// An int8 weight with one scale per output channel, as SmoothQuant's W8A8 uses it (the authors' per-channel
/// <c>quantize_weight_per_channel_absmax</c>): s_o = max(max_i |W_oi|, 1e-5) / 127, q = clamp(round(W / s), -127, 127)
/// (symmetric, -128 unused), dequantized q · s. Codes int8 (out, in), scales fp32 (out).
/// </summary>
public sealed record W8A8Weight(Tensor Codes, Tensor Scales, long[] Shape, ScalarType DType) : IQuantizedMatMul
{
    public const int QMax = 127;

    public long OutFeatures => Shape[0];
    public long InFeatures => Shape[1];

    public static W8A8Weight Quantize(Tensor weight, string? name = null)
    {
        QuantInputChecks.RequireFloat(weight, name);
        if (weight.dim() != 2) throw new ArgumentException($"W8A8 needs a 2-D [out, in] weight, got [{string.Join(", ", weight.shape)}]");
        using var scope = NewDisposeScope();
        var (codes, scales) = RowwiseInt8(weight.detach().to(ScalarType.Float32));
        QuantInputChecks.RequireFinite(scales, name);
        return new W8A8Weight(codes.MoveToOuterDisposeScope(), scales.squeeze(1).MoveToOuterDisposeScope(), weight.shape, weight.dtype);
    }

    /// <summary>Symmetric int8 per row of x (rows, n): codes int8 and scales (rows, 1) fp32. Used for the weight's
    /// output channels and, at run time, for the activation's tokens.</summary>
    public static (Tensor Codes, Tensor Scales) RowwiseInt8(Tensor x)
    {
        using var scope = NewDisposeScope();
        var scales = x.abs().amax([1], keepdim: true).clamp_min(1e-5) / QMax;
        var codes = (x / scales).round().clamp(-QMax, QMax).to(ScalarType.Int8);
        return (codes.MoveToOuterDisposeScope(), scales.MoveToOuterDisposeScope());
    }

    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        return (Codes.to(ScalarType.Float32) * Scales.unsqueeze(1)).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// W8A8's forward: x quantized per token to int8 (dynamic, <see cref="RowwiseInt8"/>), the exact
    /// int8 x int8 -> int32 product, y = acc · s_t · s_o in fp32, cast to <paramref name="computeDType"/>.
    /// </summary>
    public Tensor MatMul(Tensor x, ScalarType computeDType)
    {
        using var scope = NewDisposeScope();
        var rows = x.reshape(-1, x.shape[^1]).to(ScalarType.Float32);                     // (tokens, in)
        var (xq, xs) = RowwiseInt8(rows);                                                 // per-token int8, (tokens, 1)
        var acc = Int8MatMul.Fp32Exact(xq, Codes);                                        // (tokens, out) int32
        var y = acc.to(ScalarType.Float32).mul_(xs).mul_(Scales.unsqueeze(0));
        var outShape = x.shape.ToArray();
        outShape[^1] = OutFeatures;
        return y.reshape(outShape).to(computeDType).MoveToOuterDisposeScope();
    }

    public W8A8Weight To(Device device) => this with { Codes = Codes.to(device), Scales = Scales.to(device) };

    public long StorageBytes => Codes.numel() + 4 * Scales.numel();

    public string FormatName => "w8a8";
}
