using QLoraNet.Formats;
using QLoraNet.Quant.Gptq;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// GPTQ over one decoder layer, "true sequential" as AutoGPTQ does it for Llama-like layers (its
/// inside_layer_modules): the linears are quantized in the groups [k, v, q], [o], [up, gate], [down]; for each group
/// the layer runs over all calibration samples with the group's linears tapped, each tapped linear's Hessian
/// H = 2 X X^T is accumulated (<see cref="GptqHessian"/>), and each is solved (<see cref="GptqSolver"/>) and replaced
/// by its <see cref="GptqLinear"/>, so later groups see the inputs the already-quantized ones produce. The next
/// layer's input is this layer's output after quantization. Host and device memory: the layer's activations for the
/// N x L tokens (input and output), one chunk's transients, and the group's (in, in) fp32 Hessians.
/// </summary>
public sealed class GptqLayerQuantizer(GptqFormat format) : ILayerQuantizer
{
    static readonly LinearRole[][] Sequence =
        [[LinearRole.Key, LinearRole.Value, LinearRole.Query], [LinearRole.Output], [LinearRole.Up, LinearRole.Gate], [LinearRole.Down]];

    public Tensor Quantize(CalibrationLayer layer, Tensor hidden)
    {
        foreach (var roles in Sequence)
        {
            var linears = roles.Select(layer.Find).OfType<LayerLinear>().ToList();
            var hessians = linears.ToDictionary(l => l, l => new GptqHessian(l.InFeatures, hidden.device));
            try
            {
                layer.RunObserving(hidden, hessians.ToDictionary(kv => kv.Key, kv => (Action<TorchSharp.torch.Tensor>)kv.Value.Add), keep: false);
                foreach (var l in linears)
                {
                    GptqWeight stored;
                    using (var dense = layer.DenseWeight(l))
                        stored = GptqSolver.Quantize(dense, hessians[l].Matrix, format, name: layer.WeightName(l));
                    layer.Replace(l, new GptqLinear(stored, layer.ComputeDType)).Dispose();
                }
            }
            finally
            {
                foreach (var h in hessians.Values) h.Dispose();
            }
        }
        return layer.Run(hidden);
    }
}
