namespace QLoraNet.Formats;

/// <summary>One norm weight of every decoder layer: <see cref="Path"/> relative to the layer ("input_layernorm"), shape [hidden].</summary>
public sealed record LayerNormWeight(string Path, NormRole Role);
