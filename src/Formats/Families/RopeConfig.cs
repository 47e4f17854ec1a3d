using System.Text.Json;

namespace QLoraNet.Formats;

/// <summary>
/// A family's RoPE settings from config.json, in every spelling the hub and transformers use: rope_theta at the top
/// level (transformers 4 files: the hub's Llama 2/3.x, Mistral, Qwen2, Gemma), rope_parameters {rope_type,
/// rope_theta, ...} (transformers 5), rope_scaling {rope_type or type, factor, ...} (transformers 4). Types computed:
/// "default" and "llama3" (transformers' _compute_llama3_parameters); any other is refused by name, as are
/// per-layer-type RoPE parameters, before any weight is read.
/// </summary>
internal static class RopeConfig
{
    static readonly string[] Keys = ["rope_parameters", "rope_scaling"];

    public static RopeSettings Read(HfConfigJson c, int headDim, double defaultTheta = 10000.0)
    {
        double theta = c.Double("rope_theta") ?? defaultTheta;
        double partial = c.Double("partial_rotary_factor") ?? 1.0;
        var kind = RopeScalingKind.None;
        Llama3RopeScaling? llama3 = null;
        foreach (var key in Keys)
        {
            if (c.Object(key) is not { } rp) continue;
            if (rp.TryGetProperty("full_attention", out _) || rp.TryGetProperty("sliding_attention", out _))
                throw new NotSupportedException($"{c.Path}: {key} per layer type (full_attention / sliding_attention) is not implemented; QLoraNet reads one RoPE setting for all layers");
            string type = HfConfigJson.String(rp, "rope_type") ?? HfConfigJson.String(rp, "type") ?? "default";
            theta = c.Double(rp, "rope_theta", $"{key}.rope_theta") ?? theta;
            partial = c.Double(rp, "partial_rotary_factor", $"{key}.partial_rotary_factor") ?? partial;
            switch (type)
            {
                case "default":
                    break;
                case "llama3":
                    kind = RopeScalingKind.Llama3;
                    llama3 = ReadLlama3(c, key, rp);
                    break;
                default:
                    throw new NotSupportedException($"{c.Path}: {key} type {SafeText.Quote(type)} is not implemented (QLoraNet computes default and llama3 RoPE); use a model without this RoPE scaling");
            }
        }
        if (theta <= 0) throw new InvalidDataException($"{c.Path}: rope_theta {theta} must be positive");
        if (partial is <= 0 or > 1) throw new InvalidDataException($"{c.Path}: partial_rotary_factor {partial} must be in (0, 1]");
        return new RopeSettings(theta, (int)(headDim * partial), kind, llama3);
    }

    static Llama3RopeScaling ReadLlama3(HfConfigJson c, string key, JsonElement rp)
    {
        double Required(string field) => c.Double(rp, field, $"{key}.{field}")
            ?? throw new InvalidDataException($"{c.Path}: {key} of rope_type llama3 needs '{field}'");
        var s = new Llama3RopeScaling(Required("factor"), Required("low_freq_factor"), Required("high_freq_factor"),
            (int)Required("original_max_position_embeddings"));
        if (s.Factor <= 0 || s.LowFreqFactor <= 0 || s.OriginalMaxPositions <= 0)
            throw new InvalidDataException($"{c.Path}: {key}: factor, low_freq_factor and original_max_position_embeddings must be positive");
        if (s.HighFreqFactor <= s.LowFreqFactor)
            throw new InvalidDataException($"{c.Path}: {key}: high_freq_factor {s.HighFreqFactor} must exceed low_freq_factor {s.LowFreqFactor} (the smoothing band would be empty)");
        return s;
    }
}
