using QLoraNet.Formats;
using QLoraNet.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// A peft adapter directory: <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> holding every LoRA
/// factor under its peft key (<see cref="AdapterKeys"/>), fp32, with safetensors metadata {"format": "pt"} as peft
/// writes it. Such a directory loads in peft (`PeftModel.from_pretrained`) and peft's load here.
/// </summary>
public static class AdapterFiles
{
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>
    /// Writes the model's LoRA factors and <paramref name="config"/> into a fresh sibling directory, then renames it
    /// to <paramref name="directory"/>, so a crash mid-save never leaves a half-written adapter where a complete one
    /// is expected. An existing <paramref name="directory"/> is replaced as a whole.
    /// </summary>
    public static void Save(string directory, nn.Module model, AdapterConfig config)
    {
        var loras = LoraModules(model);
        if (loras.Count == 0) throw new InvalidOperationException("the model has no LoRA modules to save; apply LoRA first");
        foreach (var (path, lora) in loras)
        {
            if (lora.Rank != config.Lora.R)
                throw new ArgumentException($"LoRA module {path} has rank {lora.Rank} but the adapter config says r={config.Lora.R}");
        }

        AtomicDirectory.Write(directory, staging =>
        {
            using (var scope = NewDisposeScope())
            {
                var tensors = loras.SelectMany(l => new[]
                {
                    new KeyValuePair<string, Tensor>(AdapterKeys.ToPeft(l.path, AdapterKeys.A), l.lora.A.detach().to(ScalarType.Float32)),
                    new KeyValuePair<string, Tensor>(AdapterKeys.ToPeft(l.path, AdapterKeys.B), l.lora.B.detach().to(ScalarType.Float32)),
                }).ToList();
                SafeTensors.Write(Path.Combine(staging, WeightsFileName), tensors);
            }
            config.Save(staging);
        });
    }

    /// <summary>
    /// Reads the adapter in <paramref name="directory"/>, applies LoRA to <paramref name="model"/> as its config says
    /// and loads the factors (see <see cref="LoadWeights"/>). Returns the config.
    /// </summary>
    public static AdapterConfig ApplyAndLoad<TModel>(string directory, TModel model, bool allowNonFinite = false) where TModel : nn.Module, IReplaceableLinears
    {
        var config = AdapterConfig.Load(directory);
        CheckWeightsHeader(directory, config);
        LoraApplier.Apply(model, config.Lora);
        LoadWeights(directory, model, config, allowNonFinite);
        return config;
    }

    /// <summary>
    /// Copies the factors of <c>adapter_model.safetensors</c> into a model that already carries LoRA. Every tensor
    /// must name a LoRA module of the model with the shape it has there, and every LoRA module must get both its
    /// factors; nothing is copied unless all of that holds.
    /// </summary>
    public static void LoadWeights(string directory, nn.Module model, AdapterConfig config, bool allowNonFinite = false)
    {
        string file = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(file)) throw new FileNotFoundException($"{file}: not found (a peft adapter directory needs an {WeightsFileName})", file);
        var loras = LoraModules(model).ToDictionary(l => l.path, l => l.lora);
        if (loras.Count == 0) throw new InvalidOperationException($"{directory}: the model has no LoRA modules to load into; apply LoRA first");

        using var f = SafeTensorsFile.Open(file, allowNonFinite);
        var plan = new List<(string key, Parameter target)>();
        foreach (var key in f.Names)
        {
            if (!AdapterKeys.TryParse(key, out var path, out var factor))
                throw new InvalidDataException(
                    $"{file}: tensor {SafeText.Quote(key)} is not a LoRA factor (expected {AdapterKeys.Prefix}<module>.lora_A.weight or .lora_B.weight)");
            var shape = f.Info(key).Shape;
            if (!loras.TryGetValue(path, out var lora))
                throw new InvalidDataException(
                    $"{file}: tensor '{key}' {Text(shape)} is for module '{path}', which has no LoRA in the model (LoRA modules: {Preview(loras.Keys)})");
            // A is [r, in] and B is [out, r]: the rank is A's rows and B's columns.
            long rank = shape.Length != 2 ? -1 : factor == AdapterKeys.A ? shape[0] : shape[1];
            if (rank != config.Lora.R)
                throw new InvalidDataException($"{file}: tensor '{key}' {Text(shape)} has rank {rank} but {AdapterConfig.FileName} says r={config.Lora.R}");
            var target = factor == AdapterKeys.A ? lora.A : lora.B;
            if (!target.shape.SequenceEqual(shape))
                throw new InvalidDataException(
                    $"{file}: tensor '{key}' is {Text(shape)} but the model's {path}.{factor}.weight is {Text(target.shape)}");
            plan.Add((key, target));
        }
        var present = plan.Select(p => p.key).ToHashSet();
        foreach (var path in loras.Keys)
        {
            foreach (var factor in new[] { AdapterKeys.A, AdapterKeys.B })
            {
                string key = AdapterKeys.ToPeft(path, factor);
                if (!present.Contains(key))
                    throw new InvalidDataException($"{file}: no tensor '{key}' for the model's LoRA module {path}");
            }
        }

        using (torch.no_grad())
        {
            foreach (var (key, target) in plan)
            {
                using var value = f.Read(key);
                target.copy_(value);  // converts the stored dtype (peft may save bf16/fp16) to our fp32
            }
        }
    }

    /// <summary>
    /// Compares adapter_config.json with the safetensors header of the factors before any LoRA module is built
    /// (building them allocates r x (in + out) per module: r = 1000000 would take gigabytes before the first
    /// mismatch could be noticed). Every tensor must be a LoRA factor of rank r, and every listed target module
    /// must have factors in the file.
    /// </summary>
    public static void CheckWeightsHeader(string directory, AdapterConfig config)
    {
        string file = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(file)) throw new FileNotFoundException($"{file}: not found (a peft adapter directory needs an {WeightsFileName})", file);
        using var f = SafeTensorsFile.Open(file);
        var paths = new List<string>();
        foreach (var info in f.Tensors)
        {
            if (!AdapterKeys.TryParse(info.Name, out var path, out var factor))
                throw new InvalidDataException(
                    $"{file}: tensor {SafeText.Quote(info.Name)} is not a LoRA factor (expected {AdapterKeys.Prefix}<module>.lora_A.weight or .lora_B.weight)");
            long rank = info.Shape.Length != 2 ? -1 : factor == AdapterKeys.A ? info.Shape[0] : info.Shape[1];
            if (rank != config.Lora.R)
                throw new InvalidDataException(
                    $"{file}: tensor {SafeText.Quote(info.Name)} {info.ShapeText} has rank {rank} but {AdapterConfig.FileName} says r={config.Lora.R}; the two files do not belong together");
            paths.Add(path);
        }
        if (paths.Count == 0) throw new InvalidDataException($"{file}: holds no LoRA factors");
        if (config.Lora.IsAllLinear) return;
        foreach (var target in config.Lora.Targets)
            if (!paths.Any(p => LoraApplier.MatchesTarget(p, target)))
                throw new InvalidDataException(
                    $"{Path.Combine(directory, AdapterConfig.FileName)}: target module {SafeText.Quote(target)} has no factors in {file}; the two files do not belong together");
    }

    /// <summary>The model's LoRA modules with their paths, in model order.</summary>
    public static IReadOnlyList<(string path, LoraLinear lora)> LoraModules(nn.Module model) =>
        model.named_modules().Where(m => m.module is LoraLinear).Select(m => (m.name, (LoraLinear)m.module)).ToList();

    private static string Text(long[] shape) => "[" + string.Join(", ", shape) + "]";

    private static string Preview(IEnumerable<string> paths)
    {
        var list = paths.ToList();
        return string.Join(", ", list.Take(4)) + (list.Count > 4 ? $", ... ({list.Count} in all)" : "");
    }
}
