namespace QLoraNet.Formats;

/// <summary>
/// Which decoder layers attend through a sliding window, from config.json: transformers 5 lists a type per layer
/// (layer_types: "full_attention" or "sliding_attention"); older files leave the pattern to the config class
/// (Mistral: every layer when sliding_window is set; Gemma 2: every even layer; Qwen2: layers from
/// max_window_layers on, and only with use_sliding_window). A sliding layer sees the <c>window</c> newest keys up to
/// itself (transformers' sliding-window mask). Any other layer type is refused by name; a sliding layer without a
/// window is a contradiction, refused in one line.
/// </summary>
internal static class AttentionWindowConfig
{
    /// <param name="window">the family's window size, or null when the config switches windows off.</param>
    /// <param name="defaultSliding">the family's pattern when config.json has no layer_types.</param>
    /// <param name="noWindowReason">why <paramref name="window"/> is null, for the contradiction message.</param>
    /// <returns>the window of each layer (null = full causal attention), or null when no layer slides.</returns>
    public static IReadOnlyList<int?>? Read(HfConfigJson c, int layers, int? window, Func<int, bool> defaultSliding, string noWindowReason)
    {
        if (window is < 1) throw new InvalidDataException($"{c.Path}: sliding_window {window} must be at least 1");
        var types = c.Strings("layer_types");
        if (types.Count > 0 && types.Count != layers)
            throw new InvalidDataException($"{c.Path}: layer_types has {types.Count} entries but num_hidden_layers is {layers}");
        var windows = new int?[layers];
        for (int i = 0; i < layers; i++)
        {
            bool sliding = types.Count == 0 ? window is not null && defaultSliding(i) : types[i] switch
            {
                "full_attention" => false,
                "sliding_attention" => true,
                var t => throw new NotSupportedException($"{c.Path}: layer_types[{i}] {SafeText.Quote(t)} is not implemented (QLoraNet computes full_attention and sliding_attention)"),
            };
            if (sliding && window is null)
                throw new InvalidDataException($"{c.Path}: layer_types[{i}] is sliding_attention but {noWindowReason}; set the window or make the layer full_attention");
            windows[i] = sliding ? window : null;
        }
        return windows.Any(w => w is not null) ? windows : null;
    }
}
