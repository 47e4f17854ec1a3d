using QLoraNet.Formats;
using QLoraNet.Quant.SmoothQuant;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// SmoothQuant over one decoder layer, as the authors' <c>smooth_lm</c> treats Llama-like layers: the float layer runs
/// over the calibration samples while the inputs of q_proj (= the pre-attention norm's output, shared by q, k, v) and
/// of gate_proj (= the pre-MLP norm's output, shared by gate, up) are tapped for their per-channel max |x|; the
/// smoothing factors (<see cref="SmoothingScales"/>) are divided out of those norms and multiplied into the columns
/// of q, k, v and gate, up; then all seven linears become W8A8 (<see cref="W8A8Linear"/>; o_proj and down_proj
/// unsmoothed, as in the paper's Llama recipe). The next layer's input is the float layer's output, which smoothing
/// does not change.
/// </summary>
public sealed class SmoothQuantLayerQuantizer(SmoothQuantFormat format) : ILayerQuantizer
{
    public Tensor Quantize(CalibrationLayer layer, Tensor hidden)
    {
        var groups = new (NormRole Norm, LinearRole Tapped, LinearRole[] Linears)[]
        {
            (NormRole.PreAttention, LinearRole.Query, [LinearRole.Query, LinearRole.Key, LinearRole.Value]),
            (NormRole.PreMlp, LinearRole.Gate, [LinearRole.Gate, LinearRole.Up]),
        };
        var maxima = new Dictionary<LayerLinear, Tensor?>();
        var observers = new Dictionary<LayerLinear, Action<Tensor>>();
        foreach (var g in groups)
            if (layer.Find(g.Tapped) is { } tapped)
            {
                maxima[tapped] = null;
                observers[tapped] = x => maxima[tapped] = Keep(SmoothingScales.UpdateMax(maxima[tapped], x), maxima[tapped]);
            }
        var next = layer.RunObserving(hidden, observers, keep: true)!;

        var weights = layer.Linears.ToDictionary(l => l, layer.DenseWeight);
        try
        {
            foreach (var g in groups)
            {
                var linears = g.Linears.Select(layer.Find).OfType<LayerLinear>().ToList();
                if (layer.Find(g.Tapped) is not { } tapped || maxima[tapped] is not { } max) continue;
                using var s = SmoothingScales.Compute(max, linears.Select(l => weights[l]).ToList(), format.Alpha);
                layer.Norm(g.Norm).DivideOutput(s);
                using var columns = s.unsqueeze(0);                                      // (1, in)
                foreach (var l in linears) weights[l].mul_(columns);
            }
            foreach (var l in layer.Linears)
                layer.Replace(l, new W8A8Linear(W8A8Weight.Quantize(weights[l], layer.WeightName(l)), layer.ComputeDType, format.ToString())).Dispose();
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
            foreach (var m in maxima.Values) m?.Dispose();
        }
        return next;
    }

    /// <summary>The new running max, out of the chunk's dispose scope; the old one disposed.</summary>
    static Tensor Keep(Tensor updated, Tensor? previous)
    {
        updated.DetachFromDisposeScope();
        previous?.Dispose();
        return updated;
    }
}
