namespace QLoraNet.Formats;

/// <summary>
/// The parameters of RoPE type "llama3" (Llama 3.1/3.2; transformers' _compute_llama3_parameters), as
/// rope_scaling / rope_parameters name them: frequencies whose wavelength 2π/f exceeds
/// <see cref="OriginalMaxPositions"/>/<see cref="LowFreqFactor"/> are divided by <see cref="Factor"/>, those shorter
/// than <see cref="OriginalMaxPositions"/>/<see cref="HighFreqFactor"/> are kept, and the band between is
/// interpolated linearly in original_max / wavelength.
/// </summary>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions);
