namespace QLoraNet.Formats;

/// <summary>
/// The registry of model families: config.json's model_type / architectures pick the family whose parser derives
/// the <see cref="ModelArchitecture"/>. Adding a family is one file under Families/ and one line in <see cref="All"/>.
/// Anything no family reads (an unknown model_type, a mixture of experts) is refused here, by name, before any
/// weight is read.
/// </summary>
public static class ModelFamilies
{
    /// <summary>Every family QLoraNet loads, in lookup order.</summary>
    public static readonly IReadOnlyList<IModelFamily> All =
    [
        new LlamaFamily(),
        new MistralFamily(),
        new Qwen2Family(),
        new GemmaFamily(),
        new Gemma2Family(),
        new BitNetFamily(),
    ];

    /// <summary>config.json keys that announce a mixture-of-experts MLP, which no family implements.</summary>
    static readonly string[] ExpertCounts = ["num_local_experts", "num_experts", "n_routed_experts"];

    /// <summary>The architecture of the model directory (or config.json file) <paramref name="pathOrDir"/>.</summary>
    public static ModelArchitecture Load(string pathOrDir) => Parse(HfConfigJson.Load(pathOrDir));

    public static ModelArchitecture Parse(HfConfigJson config)
    {
        var architectures = config.Strings("architectures");
        string modelType = config.String("model_type") ?? "";
        foreach (var key in ExpertCounts)
            if (config.Int(key) is > 1 and var n)
                throw new NotSupportedException($"{config.Path}: {key} {n}: mixture-of-experts models are not supported; use a dense model");

        string what = architectures.Count > 0 ? $"architecture {SafeText.Clip(string.Join(", ", architectures), 80)}" : $"model_type {SafeText.Quote(modelType)}";
        var family = Find(modelType, architectures)
            ?? throw new NotSupportedException($"{config.Path}: {what} is not supported; QLoraNet loads {Supported}");
        if (architectures.Count > 0 && !architectures.Any(family.Architectures.Contains))
            throw new NotSupportedException($"{config.Path}: {what} is not supported; the {family.Name} family loads {string.Join(", ", family.Architectures)}");
        // The two fields name the model twice; transformers picks the class by model_type, so a file where they
        // disagree (model_type "gpt2", architectures [LlamaForCausalLM]) is damaged or hand-edited: neither is trusted.
        if (modelType.Length > 0 && architectures.Count > 0 && !family.ModelTypes.Contains(modelType))
            throw new InvalidDataException(
                $"{config.Path}: model_type {SafeText.Quote(modelType)} contradicts architectures [{SafeText.Clip(string.Join(", ", architectures), 80)}] (the {family.Name} family has model_type {string.Join(", ", family.ModelTypes.Select(t => $"'{t}'"))}); fix whichever is wrong");
        var arch = family.Parse(config);
        // Sizes in range and consistent with each other before anything is derived from them or allocated (issue 11):
        // a hostile num_hidden_layers 2147483647 is refused here, not after gigabytes of layers.
        ConfigLimits.Check(config.Path, arch.VocabSize, arch.Hidden, arch.Intermediate, arch.NumLayers, arch.NumHeads,
            arch.NumKvHeads, arch.HeadDim, arch.MaxPositions);
        return arch;
    }

    /// <summary>The family that reads this model_type or one of these architectures; null when none does.</summary>
    public static IModelFamily? Find(string modelType, IReadOnlyList<string> architectures) =>
        All.FirstOrDefault(f => f.ModelTypes.Contains(modelType) || architectures.Any(f.Architectures.Contains));

    /// <summary>"LlamaForCausalLM (model_type "llama")", one entry per family, for messages and --help.</summary>
    public static string Supported =>
        string.Join("; ", All.Select(f => $"{string.Join(", ", f.Architectures)} (model_type {string.Join(", ", f.ModelTypes.Select(t => $"\"{t}\""))})"));
}
