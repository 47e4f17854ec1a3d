namespace QLoraNet.Formats;

/// <summary>
/// Rotary position embedding as config.json sets it (Su et al. 2021): the base <see cref="Theta"/> of the
/// frequencies theta^(-2i/d), how they are rescaled for long context (<see cref="Scaling"/>, with its parameters in
/// <see cref="Llama3"/> for "llama3"), and <see cref="RotaryDim"/>, how many dimensions of each head rotate (all of
/// them for every family so far; partial_rotary_factor would lower it). The frequencies themselves are computed by
/// the model (QLoraNet.Models.RotaryEmbedding.InverseFrequencies), in fp32 with transformers' op order.
/// </summary>
public sealed record RopeSettings(double Theta, int RotaryDim, RopeScalingKind Scaling = RopeScalingKind.None, Llama3RopeScaling? Llama3 = null);
