using QLoraNet.Quant;
using QLoraNet.Quant.Awq;
using QLoraNet.Quant.Gptq;
using QLoraNet.Quant.SmoothQuant;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// One calibrated method applied to one decoder layer: given the layer (dense fp32 linears) and its input over the
/// calibration samples (N, L, H), it replaces the layer's linears by their quantized form (and may rescale its norms),
/// and returns the next layer's input: the quantized layer's output (GPTQ, as AutoGPTQ) or the float layer's (AWQ,
/// SmoothQuant, as their reference implementations).
/// </summary>
public interface ILayerQuantizer
{
    Tensor Quantize(CalibrationLayer layer, Tensor hidden);
}

/// <summary>The layer quantizer of each calibrated format.</summary>
public static class LayerQuantizers
{
    public static ILayerQuantizer For(BaseFormat format) => format switch
    {
        GptqFormat g => new GptqLayerQuantizer(g),
        AwqFormat a => new AwqLayerQuantizer(a),
        SmoothQuantFormat s => new SmoothQuantLayerQuantizer(s),
        _ => throw new ArgumentException($"{format} is not a calibrated format (gptq, awq4, smoothquant)"),
    };
}
