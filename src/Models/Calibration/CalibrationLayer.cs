using QLoraNet.Formats;
using QLoraNet.Quant;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models.Calibration;

/// <summary>
/// One decoder layer under calibration, with what a layer quantizer needs: its linears by role (read and replaced
/// through the layer's slots), its norms, and passes of the layer (or of a part of it) over all N calibration
/// samples, <see cref="ChunkSamples"/> at a time so that transient activations stay bounded (attention scores of one
/// chunk, not of N samples). Everything runs without gradients.
/// </summary>
public sealed class CalibrationLayer
{
    public CalibrationLayer(LlamaDecoderLayer layer, ModelArchitecture architecture, int index, Tensor cos, Tensor sin,
        int chunkSamples, ScalarType computeDType)
    {
        Layer = layer;
        Architecture = architecture;
        Index = index;
        Cos = cos;
        Sin = sin;
        ChunkSamples = Math.Max(1, chunkSamples);
        ComputeDType = computeDType;
    }

    public LlamaDecoderLayer Layer { get; }
    public ModelArchitecture Architecture { get; }
    public int Index { get; }

    /// <summary>RoPE tables for positions 0..L-1, (1, L, headDim), broadcast over the samples of a chunk.</summary>
    public Tensor Cos { get; }
    public Tensor Sin { get; }

    public int ChunkSamples { get; }
    public ScalarType ComputeDType { get; }

    /// <summary>The layer's linears, in the record's order.</summary>
    public IReadOnlyList<LayerLinear> Linears => Architecture.LayerLinears;

    /// <summary>The linear with <paramref name="role"/>, or null when the family has none.</summary>
    public LayerLinear? Find(LinearRole role) => Architecture.LayerLinears.FirstOrDefault(l => l.Role == role);

    /// <summary>The checkpoint key of a linear's weight ("model.layers.3.self_attn.q_proj.weight").</summary>
    public string WeightName(LayerLinear l) => $"{Architecture.LayerPrefix(Index)}{l.Path}.weight";

    public LinearSlots Slots(LayerLinear l) => l.IsAttention ? Layer.SelfAttn.Projections : Layer.Mlp.Projections;

    /// <summary>The frozen linear now in the slot of <paramref name="l"/>.</summary>
    public FrozenLinear Linear(LayerLinear l) => Slots(l)[l.Name] as FrozenLinear
        ?? throw new InvalidOperationException($"{WeightName(l)}: the slot does not hold a frozen linear during calibration");

    /// <summary>Puts <paramref name="module"/> in the slot of <paramref name="l"/>; the previous one is returned, not disposed.</summary>
    public nn.Module<Tensor, Tensor> Replace(LayerLinear l, nn.Module<Tensor, Tensor> module)
    {
        var previous = Slots(l)[l.Name];
        Slots(l).Replace(l.Name, module);
        return previous;
    }

    /// <summary>The norm in <paramref name="role"/>; a family without it cannot be calibrated this way.</summary>
    public RmsNorm Norm(NormRole role) => Layer.Norm(role)
        ?? throw new NotSupportedException($"layer {Index} has no {role} norm to fold calibration scales into");

    /// <summary>The weight of <paramref name="l"/> as a dense fp32 tensor (a new tensor).</summary>
    public Tensor DenseWeight(LayerLinear l) => Linear(l).DequantizeWeight(ScalarType.Float32);

    /// <summary>
    /// f over <paramref name="input"/> (N, ..., d) in chunks of samples; the outputs concatenated (N, ..., d') when
    /// <paramref name="keep"/>, else null (f ran for its side effects: taps).
    /// </summary>
    public Tensor? Map(Tensor input, Func<Tensor, Tensor> f, bool keep = true)
    {
        using var noGrad = no_grad();
        Tensor? output = null;
        long n = input.shape[0];
        for (long s = 0; s < n; s += ChunkSamples)
        {
            using var scope = NewDisposeScope();
            long count = Math.Min(ChunkSamples, n - s);
            var y = f(input.narrow(0, s, count));
            if (!keep) continue;
            if (output is null)
            {
                output = empty([n, .. y.shape.Skip(1)], y.dtype, y.device);
                output.DetachFromDisposeScope();
            }
            output.narrow(0, s, count).copy_(y);
        }
        return output;
    }

    /// <summary>The whole layer over all samples: hidden (N, L, H) -> (N, L, H).</summary>
    public Tensor Run(Tensor hidden) => Map(hidden, h => Layer.call(h, Cos, Sin, null, null))!;

    /// <summary>
    /// The whole layer over all samples with each linear of <paramref name="observers"/> showing its inputs
    /// (chunk by chunk, (chunk, L, in)) to its observer; returns the layer's output when <paramref name="keep"/>.
    /// </summary>
    public Tensor? RunObserving(Tensor hidden, IReadOnlyDictionary<LayerLinear, Action<Tensor>> observers, bool keep)
    {
        var originals = new Dictionary<LayerLinear, nn.Module<Tensor, Tensor>>();
        try
        {
            foreach (var (l, observe) in observers) originals[l] = Replace(l, new LinearTap(Slots(l)[l.Name], observe));
            return Map(hidden, h => Layer.call(h, Cos, Sin, null, null), keep);
        }
        finally
        {
            // The taps are dropped, not disposed: TorchSharp's Module.Dispose registers and disposes a module's fields,
            // which would dispose the linear a tap wraps. A tap owns no tensors.
            foreach (var (l, original) in originals) Replace(l, original);
        }
    }

    /// <summary>The attention block alone (pre-norm output in, attention output out), as AWQ inspects it.</summary>
    public Tensor Attention(Tensor x) => Layer.SelfAttn.call(x, Cos, Sin, null, null);

    /// <summary>The MLP block alone.</summary>
    public Tensor Mlp(Tensor x) => Layer.Mlp.call(x);

    /// <summary>One linear with its bias, as the layer computes it.</summary>
    public Tensor Apply(LayerLinear l, Tensor x) => Slots(l).Call(l.Role, x);
}
