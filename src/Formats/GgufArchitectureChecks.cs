namespace QLoraNet.Formats;

/// <summary>Checks several <see cref="IGgufArchitecture"/>s share: what their llama.cpp graphs have no member for.</summary>
public static class GgufArchitectureChecks
{
    /// <summary>Soft-caps and a custom query scale exist in llama.cpp's gemma2 graph only.</summary>
    public static void RefuseCapsAndScale(ModelArchitecture arch, string ggufArch)
    {
        if (arch.AttentionSoftCap is not null || arch.FinalLogitSoftCap is not null || arch.QueryPreAttentionScalar is double s && s != arch.HeadDim)
            throw new NotSupportedException($"llama.cpp's {ggufArch} architecture has no soft-capping or query_pre_attn_scalar; this {arch.Family} config sets them");
    }

    /// <summary>Biases exist in Gemma configs (attention_bias) but not in llama.cpp's gemma graphs.</summary>
    public static void RefuseBiases(ModelArchitecture arch, string ggufArch)
    {
        if (arch.LayerLinears.FirstOrDefault(l => l.HasBias) is { } l)
            throw new NotSupportedException($"llama.cpp's {ggufArch} architecture has no {l.Name} bias; this config sets attention_bias/mlp_bias");
    }

    /// <summary>The window all windowed layers share; null when no layer has one. Differing windows are refused.</summary>
    public static int? SingleWindow(ModelArchitecture arch)
    {
        var windows = (arch.AttentionWindows ?? []).OfType<int>().Distinct().ToList();
        return windows.Count switch
        {
            0 => null,
            1 => windows[0],
            _ => throw new NotSupportedException($"GGUF stores one sliding window; this {arch.Family} config has {string.Join(", ", windows)}"),
        };
    }
}
