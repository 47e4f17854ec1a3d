using QLoraNet.Formats;
using QLoraNet.Quant;
using QLoraNet.Quant.Awq;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// AWQ over one decoder layer, as AutoAWQ's <c>AwqQuantizer.quantize</c> does for Llama-like layers
/// (<c>awq/models/llama.py</c> get_layers_for_scaling):
/// <list type="number">
/// <item>the float layer runs over the calibration samples with every linear tapped, keeping each one's inputs; its
/// output is the next layer's input;</item>
/// <item>scales are searched (<see cref="AwqSearch.SearchScales(Tensor, Tensor, Func{Tensor, Tensor}, bool, int)"/>) for four groups, each on the unmodified layer:
/// [q, k, v] after the pre-attention norm, judged by the attention block's output; [o] after v, judged by o itself,
/// only when v and o have the same shape (no grouped-query attention: llm-awq PR 67); [gate, up] after the pre-MLP
/// norm, judged by the MLP's output; [down] after up, judged by down itself;</item>
/// <item>each group's scales are applied: the previous op's output divided (the norm's weight, or the previous
/// linear's rows and bias), the group's columns multiplied, the group's kept inputs divided;</item>
/// <item>every linear but q and k gets its clipping bounds searched on its (scaled) inputs (optional);</item>
/// <item>every linear is rounded and packed (<see cref="AwqLinear"/>).</item>
/// </list>
/// Memory: besides the layer's input and output activations, one input per scaling group (and o_proj's when it is in
/// none) is kept for the N x L tokens (AutoAWQ keeps them too), the largest being down_proj's (N, L, intermediate);
/// the clip search's temporaries are bounded by <see cref="AwqSearch.ClipBatchFloats"/> (on CUDA
/// <see cref="AwqSearch.ClipBatchFloatsCuda"/>, AutoAWQ's own size there: fewer, larger row batches, fewer launches).
/// Speed: the scale search reads its 20 errors back once per group (no host sync per candidate or chunk).
/// </summary>
public sealed class AwqLayerQuantizer(AwqFormat format) : ILayerQuantizer
{
    /// <summary>One scaling group: what produces its input, the linears that read it, whose input it is, and the block
    /// whose output judges the scales.</summary>
    sealed record ScalingGroup(Action<Tensor> DivideInput, IReadOnlyList<LayerLinear> Linears, LayerLinear Input, Func<Tensor, Tensor> Block);

    public Tensor Quantize(CalibrationLayer layer, Tensor hidden)
    {
        var weights = layer.Linears.ToDictionary(l => l, layer.DenseWeight);
        var groups = Groups(layer, weights);
        // The linears of a scaling group read one input (q, k, v the pre-attention norm's output; gate, up the pre-MLP
        // norm's), so one copy is kept per group, under the group's Input; a linear in no group keeps its own.
        var source = layer.Linears.ToDictionary(l => l, l => groups.FirstOrDefault(g => g.Linears.Contains(l))?.Input ?? l);
        var inputs = source.Values.Distinct().ToDictionary(l => l, _ => new List<Tensor>());
        var observers = inputs.ToDictionary(kv => kv.Key, kv => (Action<Tensor>)(x => kv.Value.Add(x.detach().clone().DetachFromDisposeScope())));
        Dictionary<LayerLinear, Tensor> kept = [];
        Tensor? next = null;
        try
        {
            next = layer.RunObserving(hidden, observers, keep: true)!;
            kept = inputs.ToDictionary(kv => kv.Key, kv => Concat(kv.Value));
            var scales = groups.Select(g => Search(layer, g, kept, weights)).ToList();
            for (int i = 0; i < groups.Count; i++)
            {
                var (g, s) = (groups[i], scales[i]);
                g.DivideInput(s);
                // Each temporary disposed here: a layer's leftovers would otherwise wait for the GC (CalibrationMemoryTests).
                using (var columns = s.unsqueeze(0))
                    foreach (var l in g.Linears) weights[l].mul_(columns);
                using (var inputScale = s.to(kept[g.Input].dtype)) kept[g.Input].div_(inputScale);
                s.Dispose();
            }
            foreach (var l in layer.Linears)
            {
                long group = format.GroupLength(l.InFeatures, layer.WeightName(l));
                if (format.Clip && l.Role is not (LinearRole.Query or LinearRole.Key))   // q·k products make clipping error hard to judge (AutoAWQ)
                {
                    using var bound = AwqSearch.SearchClip(weights[l], kept[source[l]], group, format.MaxQ,
                        batchFloats: AwqSearch.ClipBatchFloatsFor(weights[l].device));
                    var clipped = AwqSearch.Clip(weights[l], bound);
                    weights[l].Dispose();
                    weights[l] = clipped;
                }
                layer.Replace(l, new AwqLinear(AwqSearch.Quantize(weights[l], format, layer.WeightName(l)), layer.ComputeDType)).Dispose();
            }
        }
        catch
        {
            next?.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in kept.Values.Concat(weights.Values)) t.Dispose();
            foreach (var t in inputs.Values.SelectMany(list => list)) t.Dispose();   // chunks not concatenated (a failed run)
        }
        return next;
    }

    /// <summary>The four scaling groups of a Llama-like layer (AutoAWQ's get_layers_for_scaling).</summary>
    static List<ScalingGroup> Groups(CalibrationLayer layer, Dictionary<LayerLinear, Tensor> weights)
    {
        LayerLinear Role(LinearRole r) => layer.Find(r) ?? throw new NotSupportedException($"AWQ needs a {r} projection in layer {layer.Index}");
        var (q, k, v, o) = (Role(LinearRole.Query), Role(LinearRole.Key), Role(LinearRole.Value), Role(LinearRole.Output));
        var (gate, up, down) = (Role(LinearRole.Gate), Role(LinearRole.Up), Role(LinearRole.Down));
        Action<Tensor> DivideLinearRows(LayerLinear previous) => s =>
        {
            using (var rows = s.unsqueeze(1)) weights[previous].div_(rows);
            if (layer.Slots(previous).Bias(previous.Name) is { } bias)
                using (var biasScale = s.to(bias.dtype)) bias.div_(biasScale);
        };
        var groups = new List<ScalingGroup>
        {
            new(layer.Norm(NormRole.PreAttention).DivideOutput, [q, k, v], q, layer.Attention),
        };
        if (v.OutFeatures == o.OutFeatures && v.InFeatures == o.InFeatures)
            groups.Add(new(DivideLinearRows(v), [o], o, x => layer.Apply(o, x)));
        groups.Add(new(layer.Norm(NormRole.PreMlp).DivideOutput, [gate, up], gate, layer.Mlp));
        groups.Add(new(DivideLinearRows(up), [down], down, x => layer.Apply(down, x)));
        return groups;
    }

    /// <summary>The best scales of one group: each candidate's error is the mean squared difference between the block's
    /// output with the group's weights replaced by Q(W·s)/s and its float output.</summary>
    Tensor Search(CalibrationLayer layer, ScalingGroup g, Dictionary<LayerLinear, Tensor> kept, Dictionary<LayerLinear, Tensor> weights)
    {
        long group = format.GroupLength(g.Input.InFeatures, layer.WeightName(g.Input));
        var x = kept[g.Input];
        using var xMean = AwqSearch.InputMean(x);
        using var wMean = AwqSearch.WeightMean(g.Linears.Select(l => weights[l]).ToList(), group);
        using var reference = layer.Map(x, g.Block)!;
        // Each candidate's error stays on the device (a float64 scalar: the fp32 sum of every chunk, added in float64 as
        // the host added them before); the search reads the 20 back at once, so the grid runs without host syncs.
        Tensor ErrorOf(Tensor s)
        {
            var originals = new Dictionary<LayerLinear, nn.Module<Tensor, Tensor>>();
            try
            {
                foreach (var l in g.Linears)
                {
                    using var trial = AwqSearch.ScaledRoundTrip(weights[l], s, group, format.MaxQ);
                    originals[l] = layer.Replace(l, new DenseFrozenLinear(trial, layer.ComputeDType));   // holds its own handle
                }
                using var noGrad = no_grad();
                using var scope = NewDisposeScope();
                var sum = zeros([], ScalarType.Float64, x.device);
                for (long i = 0; i < x.shape[0]; i += layer.ChunkSamples)
                {
                    using var chunkScope = NewDisposeScope();
                    long count = Math.Min(layer.ChunkSamples, x.shape[0] - i);
                    var diff = g.Block(x.narrow(0, i, count)).to(ScalarType.Float32).sub_(reference.narrow(0, i, count).to(ScalarType.Float32));
                    sum.add_(diff.pow_(2).sum().to(ScalarType.Float64));
                }
                // A tensor divisor, not a scalar: CUDA divides by a host scalar as a multiplication by its reciprocal.
                return sum.div_(tensor((double)reference.numel(), ScalarType.Float64, x.device)).MoveToOuterDisposeScope();
            }
            finally
            {
                foreach (var (l, original) in originals) layer.Replace(l, original).Dispose();
            }
        }
        return AwqSearch.SearchScales(xMean, wMean, ErrorOf).Scales;
    }

    static Tensor Concat(List<Tensor> chunks)
    {
        var all = cat(chunks, 0);
        foreach (var c in chunks) c.Dispose();
        chunks.Clear();
        return all;
    }
}
