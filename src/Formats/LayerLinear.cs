namespace QLoraNet.Formats;

/// <summary>
/// One linear of every decoder layer, as a checkpoint names it: <see cref="Path"/> is relative to the layer
/// ("self_attn.q_proj"; the weight of layer i is "model.layers.{i}.self_attn.q_proj.weight"), the weight is
/// [<see cref="OutFeatures"/>, <see cref="InFeatures"/>] and, with <see cref="HasBias"/>, a bias [OutFeatures] sits
/// beside it ("....q_proj.bias").
/// </summary>
public sealed record LayerLinear(string Path, LinearRole Role, long OutFeatures, long InFeatures, bool HasBias = false)
{
    /// <summary>The last component of the path ("q_proj"): what peft's target_modules names.</summary>
    public string Name => Path[(Path.LastIndexOf('.') + 1)..];

    /// <summary>True for the attention projections (q, k, v, o).</summary>
    public bool IsAttention => Role is LinearRole.Query or LinearRole.Key or LinearRole.Value or LinearRole.Output;

    public long Parameters => OutFeatures * InFeatures + (HasBias ? OutFeatures : 0);
}
