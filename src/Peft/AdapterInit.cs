using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// Starts new LoRA adapters from a saved peft adapter (continued training: axolotl's lora_model_dir, peft's
/// PeftModel.from_pretrained(..., is_trainable=True)). The saved adapter must have the run's shape: the same rank,
/// target modules and layers (what decides which factors exist and their shapes); anything else is one error line
/// listing every mismatch. Its factors are copied into the freshly applied adapters (shapes checked per tensor by
/// <see cref="AdapterFiles.LoadWeights"/>). Alpha, rsLoRA and dropout are the run's own settings, not the saved
/// ones: they are how the run computes and regularises, and a different alpha simply rescales B·A from here on.
/// </summary>
public static class AdapterInit
{
    /// <summary>Checks <paramref name="directory"/>'s adapter against <paramref name="settings"/> and copies its factors
    /// into <paramref name="model"/>'s LoRA modules (applied with those settings). Returns the saved adapter's config.</summary>
    public static AdapterConfig LoadInto(string directory, nn.Module model, LoraSettings settings)
    {
        var saved = AdapterConfig.Load(directory);
        var mismatches = Mismatches(saved.Lora, settings);
        if (mismatches.Count > 0)
            throw new InvalidDataException(
                $"lora.init_from '{directory}': the adapter does not fit this run's lora settings: {string.Join("; ", mismatches)}; "
                + "set lora.r/target_modules/layers to the adapter's, or train fresh adapters");
        AdapterFiles.LoadWeights(directory, model, saved);
        return saved;
    }

    /// <summary>What differs between a saved adapter's settings and the run's, as "key: saved vs run" phrases.</summary>
    public static IReadOnlyList<string> Mismatches(LoraSettings saved, LoraSettings run)
    {
        var list = new List<string>();
        if (saved.R != run.R) list.Add($"r {saved.R} (adapter) vs {run.R} (config)");
        var a = saved.Targets.Order(StringComparer.Ordinal).ToList();
        var b = run.Targets.Order(StringComparer.Ordinal).ToList();
        if (!a.SequenceEqual(b)) list.Add($"target_modules [{string.Join(", ", a)}] (adapter) vs [{string.Join(", ", b)}] (config)");
        var la = saved.Layers?.Order().ToList();
        var lb = run.Layers?.Order().ToList();
        if (!(la is null && lb is null) && (la is null || lb is null || !la.SequenceEqual(lb)))
            list.Add($"layers {Layers(la)} (adapter) vs {Layers(lb)} (config)");
        return list;
    }

    static string Layers(IReadOnlyList<int>? layers) => layers is null ? "all" : $"[{string.Join(", ", layers)}]";
}
