using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// A weight in LLM.int8()'s storage, exactly as bitsandbytes' Int8Params._quantize makes it
/// (functional.int8_vectorwise_quant on the weight cast to fp16, default backend):
/// <list type="bullet">
/// <item>W16 = W.to(fp16); SCB[r] = max |W16[r, :]| (fp32), the row's absmax;</item>
/// <item>CB[r, c] = round(fp32(W16[r, c]) * (127 / SCB[r])), half to even, int8 in [-127, 127]; 127 / SCB is
/// torch's reciprocal(SCB) * 127 (what Python's scalar / tensor runs);</item>
/// <item>dequantized (int8_vectorwise_dequant): CB * SCB[r] * 7.874015718698502e-3 (= 1/127 as bitsandbytes writes it), fp32.</item>
/// </list>
/// An all-zero row has SCB 0 and codes 0 (bitsandbytes would compute 0 * inf there). The fp16 cast is part of
/// the format: a weight beyond fp16's range cannot be stored and is refused.
/// </summary>
/// <param name="Codes">int8 [out, in] (bitsandbytes' CB, the checkpoint's "weight").</param>
/// <param name="Scb">fp32 [out]: each row's absmax.</param>
/// <param name="Shape">[out, in].</param>
/// <param name="DType">dtype of the weight that was quantized.</param>
/// <param name="Threshold">the outlier threshold of the matmul (not part of the stored tensors).</param>
public sealed record LlmInt8Weight(Tensor Codes, Tensor Scb, long[] Shape, ScalarType DType, float Threshold) : IQuantizedWeight
{
    /// <summary>bitsandbytes' 1/127 literal (int8_vectorwise_dequant), as the fp32 the multiply uses.</summary>
    public const float InverseOf127 = 7.874015718698502e-3f;

    /// <summary>Quantizes a 2-D weight [out, in] on its own device.</summary>
    public static LlmInt8Weight Quantize(Tensor weight, float threshold = (float)LlmInt8Format.DefaultThreshold, string? name = null)
    {
        QuantInputChecks.RequireFloat(weight, name);
        if (weight.dim() != 2)
            throw new ArgumentException($"cannot quantize {What(name)} to llm-int8: expected a 2-D [out, in] weight, got [{string.Join(", ", weight.shape)}]");
        using var scope = NewDisposeScope();
        var source = weight.detach();
        QuantInputChecks.RequireFinite(source.abs().amax([1]), name);
        var w16 = source.to(ScalarType.Float16);
        var scb = w16.abs().amax([1]).to(ScalarType.Float32);                            // (out)
        using (var finite = scb.isfinite().all())
            if (!finite.item<bool>())
                throw new ArgumentException($"cannot quantize {What(name)} to llm-int8: it holds values beyond fp16's range (65504), and bitsandbytes quantizes int8 weights from fp16; scale the model or keep this tensor dense");
        var codes = RowCodes(w16, scb);
        return new LlmInt8Weight(codes.MoveToOuterDisposeScope(), scb.MoveToOuterDisposeScope(), weight.shape, weight.dtype, threshold);
    }

    /// <summary>
    /// round(x * (127 / absmax)) per row as int8, in fp32 like bitsandbytes' int8_vectorwise_quant (a half-precision x
    /// is widened exactly first); a zero absmax gives codes 0. Shared with the activation quantizer of the matmul.
    /// </summary>
    internal static Tensor RowCodes(Tensor x, Tensor absmax)
    {
        using var scope = NewDisposeScope();
        var inverse = absmax.reciprocal() * 127f;             // (rows) fp32: Python's 127.0 / t is t.reciprocal() * 127
        inverse = where(absmax.eq(0), zeros_like(inverse), inverse);
        var codes = (x.to(ScalarType.Float32) * inverse.unsqueeze(1)).round().to(ScalarType.Int8); // (rows, cols)
        return codes.MoveToOuterDisposeScope();
    }

    /// <summary>CB * SCB * (1/127) in fp32 (int8_vectorwise_dequant), then cast.</summary>
    public Tensor Dequantize(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var dense = Codes.to(ScalarType.Float32) * Scb.unsqueeze(1) * InverseOf127;      // (out, in)
        return dense.to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>Dequantized columns <paramref name="columns"/> (long, on the weight's device) only: [out, columns].</summary>
    public Tensor DequantizeColumns(Tensor columns, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var dense = Codes.index_select(1, columns).to(ScalarType.Float32) * Scb.unsqueeze(1) * InverseOf127;
        return dense.to(dtype).MoveToOuterDisposeScope();
    }

    public LlmInt8Weight To(Device device) => this with { Codes = Codes.to(device), Scb = Scb.to(device) };

    public long StorageBytes => Codes.numel() + 4 * Scb.numel();

    public string FormatName => new LlmInt8Format(Threshold).ToString();

    static string What(string? name) => name is null ? "weight" : $"tensor '{name}'";
}
