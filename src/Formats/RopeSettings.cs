namespace QLoraNet.Formats;

/// <summary>
/// Rotary position embedding as config.json sets it (Su et al. 2021): the base <see cref="Theta"/> of the
/// frequencies theta^(-2i/headDim) and how they are rescaled for long context (<see cref="Scaling"/>; only
/// <see cref="RopeScalingKind.None"/> exists today). <see cref="RotaryDim"/> is how many dimensions of each head
/// rotate (all of them for every family so far).
/// </summary>
public sealed record RopeSettings(double Theta, int RotaryDim, RopeScalingKind Scaling = RopeScalingKind.None);
