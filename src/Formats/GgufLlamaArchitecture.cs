using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// llama.cpp's <c>llama</c> architecture (conversion/llama.py LlamaModel; src/models/llama.cpp), which llama.cpp's
/// converter also uses for Mistral: adjacent-pair RoPE (LLAMA_ROPE_TYPE_NORM), so q and k rows are permuted
/// (<see cref="GgufRopePermutation"/>); Llama 3.1's "llama3" RoPE scaling as the <c>rope_freqs.weight</c> tensor of
/// per-frequency divisors, computed as LlamaModel.generate_extra_tensors does (fp32 default frequencies, wavelength
/// bands of original_max_position_embeddings / low and high freq factor); optional q/k/v/o and MLP biases.
/// Mistral's sliding window is written as <c>llama.attention.sliding_window</c>, but llama.cpp's llama graph
/// attends to the whole context (its loader never reads the key): exact up to the window's length, a warning beyond.
/// </summary>
public sealed class GgufLlamaArchitecture : IGgufArchitecture
{
    public string Name => "llama";

    public const string RopeFreqs = "rope_freqs.weight";

    public IReadOnlyList<string> Check(ModelArchitecture arch)
    {
        if (arch.Rope.Scaling is not (RopeScalingKind.None or RopeScalingKind.Llama3))
            throw new NotSupportedException($"GGUF export of RoPE scaling '{arch.Rope.Scaling}' is not written");
        GgufArchitectureChecks.RefuseCapsAndScale(arch, Name);
        return SlidingWindow(arch) is int w
            ? [$"llama.cpp's llama architecture has no sliding-window attention: the exported model equals this {arch.Family} model for contexts up to {w} tokens and attends further beyond"]
            : [];
    }

    public IEnumerable<KeyValuePair<string, GgufValue>> Metadata(ModelArchitecture arch)
    {
        if (SlidingWindow(arch) is int w) yield return new("llama.attention.sliding_window", GgufValue.UInt32((uint)w));
    }

    public Tensor Convert(string ggufName, Tensor weight, ModelArchitecture arch) =>
        GgufTensorNames.IsLinear(ggufName, "attn_q") ? GgufRopePermutation.Permute(weight, arch.NumHeads)
        : GgufTensorNames.IsLinear(ggufName, "attn_k") ? GgufRopePermutation.Permute(weight, arch.NumKvHeads)
        : weight;

    public IEnumerable<(string Name, float[] Values)> ExtraTensors(ModelArchitecture arch)
    {
        if (arch.Rope.Llama3 is { } s && arch.Rope.Scaling == RopeScalingKind.Llama3) yield return (RopeFreqs, Llama3Factors(arch.Rope.Theta, arch.Rope.RotaryDim, s));
    }

    /// <summary>
    /// llama.cpp divides each default frequency theta^(-2i/d) by factor[i] (ggml_rope_ext's freq_factors):
    /// 1 for wavelengths under original_max / high_freq_factor, <see cref="Llama3RopeScaling.Factor"/> over
    /// original_max / low_freq_factor, and 1 / ((1 - smooth) / factor + smooth) between, smooth =
    /// (original_max / wavelength - low) / (high - low): the rescaled frequency of transformers' llama3 RoPE.
    /// </summary>
    public static float[] Llama3Factors(double theta, int dim, Llama3RopeScaling s)
    {
        double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor, highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
        var factors = new float[dim / 2];
        for (int i = 0; i < factors.Length; i++)
        {
            float freq = 1f / MathF.Pow((float)theta, 2f * i / dim);           // fp32, as the converter computes it
            double wavelen = 2 * Math.PI / freq;
            double smooth = (s.OriginalMaxPositions / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
            factors[i] = wavelen < highWavelen ? 1f
                : wavelen > lowWavelen ? (float)s.Factor
                : (float)(1 / ((1 - smooth) / s.Factor + smooth));
        }
        return factors;
    }

    /// <summary>The one window every windowed layer shares (Mistral: all layers), or null without windows.</summary>
    static int? SlidingWindow(ModelArchitecture arch) => GgufArchitectureChecks.SingleWindow(arch);
}
