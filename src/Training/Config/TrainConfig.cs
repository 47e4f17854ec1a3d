using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// A fine-tuning run, as read from one YAML file plus command-line overrides (an axolotl user should find the
/// sections familiar). <see cref="Load"/> is the single place where the file is parsed and every key checked:
/// unknown keys, wrong types, bad choices and missing files fail with one line naming file:line and what is
/// valid. The model's config.json is read here too, so an unsupported model family, or a LoRA target its family does
/// not have, is reported at its config line before anything loads. Relative paths inside the config resolve from the
/// current directory (the README runs from the repo root).
/// </summary>
public sealed record TrainConfig(
    ModelConfig Model,
    QuantizationConfig Quantization,
    LoraSettings Lora,
    DataConfig Data,
    TrainingConfig Training,
    OutputConfig Output,
    EvalConfig? Eval = null)
{
    /// <summary>A config is a few hundred bytes; a file larger than this is not one.</summary>
    public const long MaxFileBytes = 1 << 20;

    /// <summary>The benchmark tasks scored during training (none unless the config has an <c>eval:</c> section).</summary>
    public EvalConfig EvalTasks => Eval ?? EvalConfig.None;

    /// <summary><c>lora.init_from</c>: a peft adapter directory whose factors start the run; null = fresh adapters.</summary>
    public string? LoraInitFrom { get; init; }

    /// <summary>Reads, overrides (<c>section.key=value</c>), binds and validates a config file.</summary>
    public static TrainConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        if (!File.Exists(path)) throw new ConfigException($"config file '{path}' not found (relative paths resolve from the current directory {Environment.CurrentDirectory})");
        string text;
        try { text = QLoraNet.Formats.UserFile.ReadText(path, MaxFileBytes, "config file"); }
        catch (InvalidDataException e) { throw new ConfigException(e.Message); }
        return Parse(text, path, overrides);
    }

    /// <summary>Like <see cref="Load"/> on YAML text; <paramref name="file"/> names it in messages.</summary>
    public static TrainConfig Parse(string yaml, string file, IEnumerable<string>? overrides = null)
    {
        var source = new ConfigSource(file);
        var root = ReadRoot(yaml, source);
        ConfigOverrides.Apply(root, overrides ?? [], source);

        var s = new ConfigSection(source, "", root, root);
        var modelSection = s.Section("model");
        var model = ModelConfig.Bind(modelSection);
        var architecture = Architecture(model, modelSection);
        var quantization = QuantizationConfig.Bind(s, "quantization");
        var lora = LoraSection.Bind(s.Section("lora"), architecture?.LinearNames, out var initFrom);
        var config = new TrainConfig(
            model,
            quantization,
            lora,
            DataConfig.Bind(s.Section("data")),
            TrainingConfig.Bind(s.Section("training")),
            OutputConfig.Bind(s.Section("output"), Path.Combine("runs", Path.GetFileNameWithoutExtension(file))),
            EvalConfig.Bind(s.Section("eval")))
        {
            LoraInitFrom = initFrom,
        };
        s.Finish();
        source.ThrowIfMissing();
        CheckAcrossSections(config, s, architecture);
        return config;
    }

    /// <summary>The resolved config (every default written out) as YAML that <see cref="Parse"/> reads back.</summary>
    public string ToYaml()
    {
        var root = YamlOut.Map(
            ("model", Model.ToYaml()), ("quantization", Quantization.ToYaml()), ("lora", LoraSection.ToYaml(Lora, LoraInitFrom)),
            ("data", Data.ToYaml()), ("training", Training.ToYaml()), ("output", Output.ToYaml()), ("eval", EvalTasks.ToYaml()));
        var writer = new StringWriter();
        new YamlStream(new YamlDocument(root)).Save(writer, assignAnchors: false);
        // YamlStream ends every document with a "..." line; a config file has exactly one document.
        var lines = writer.ToString().Replace("\r\n", "\n").TrimEnd('\n').Split('\n');
        return string.Join("\n", lines[^1] == "..." ? lines[..^1] : lines) + "\n";
    }

    /// <summary>The model's family record, read from its config.json; null when there is no path (reported as missing).</summary>
    static ModelArchitecture? Architecture(ModelConfig model, ConfigSection section)
    {
        if (model.Path.Length == 0) return null;
        try
        {
            var arch = ModelFamilies.Load(model.Path);
            ArchitectureSupport.Require(arch, Path.Combine(model.Path, ModelArchitecture.ConfigFileName));
            return arch;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or NotSupportedException)
        {
            throw section.ErrorAt("path", e.Message);
        }
    }

    static YamlMappingNode ReadRoot(string yaml, ConfigSource source)
    {
        if (yaml.Length > MaxFileBytes) throw new ConfigException($"{source.File}: {yaml.Length} characters is more than a config file may hold ({MaxFileBytes})");
        var stream = BoundedYaml.Load(yaml, line => $"{source.File}:{line}", m => new ConfigException(m));
        if (stream.Documents.Count == 0) return new YamlMappingNode();
        if (stream.Documents.Count > 1) throw new ConfigException($"{source.File}: holds {stream.Documents.Count} YAML documents; a config is one");
        return stream.Documents[0].RootNode as YamlMappingNode
            ?? throw source.Error(stream.Documents[0].RootNode, "a config must be a mapping of sections (model:, lora:, data:, ...)");
    }

    /// <summary>DPO trains on preference pairs and nothing else does; a pair is one row (chosen and rejected side by
    /// side), so it is never packed with others, and only the answers count.</summary>
    static void CheckObjective(TrainConfig c, ConfigSection root)
    {
        bool dpo = c.Training.Objective == TrainingObjective.Dpo, pairs = c.Data.Format == DataFormat.Preference;
        if (dpo && !pairs)
            throw root.Section("data").ErrorAt("format",
                $"'training.objective: dpo' trains on preference pairs: set 'data.format' to preference (rows with {c.Data.Columns.Prompt}, {c.Data.Columns.Chosen}, {c.Data.Columns.Rejected}); got {YamlNames.Of(c.Data.Format)}");
        if (pairs && !dpo)
            throw root.Section("training").ErrorAt("objective",
                $"'data.format: preference' holds chosen/rejected pairs, which only 'training.objective: dpo' trains on; got {YamlNames.Of(c.Training.Objective)}");
        if (pairs && c.Data.Packing)
            throw root.Section("data").ErrorAt("packing",
                "'data.packing' must be false with data.format preference: each row already holds one pair, its chosen and rejected answers side by side");
        if (pairs && c.Data.TrainOnInputs)
            throw root.Section("data").ErrorAt("train_on_inputs",
                "'data.train_on_inputs' must be false with data.format preference: DPO compares the answers' log-probabilities, not the prompt's");
    }

    static void CheckAcrossSections(TrainConfig c, ConfigSection root, ModelArchitecture? architecture)
    {
        // Positions past max_position_embeddings were never trained: sequences that long are not fine-tuning.
        if (architecture is not null && c.Data.MaxSeqLen > architecture.MaxPositions)
            throw root.Section("data").ErrorAt("max_seq_len",
                $"'data.max_seq_len' {c.Data.MaxSeqLen} is more than the model's context length {architecture.MaxPositions} (max_position_embeddings in {Path.Combine(c.Model.Path, ModelArchitecture.ConfigFileName)}); lower it");
        if (c.Data.Format == DataFormat.Chat && c.Data.Template == TemplateKind.Alpaca)
            throw root.Section("data").ErrorAt("template",
                $"'data.template' alpaca renders instruction rows only; use one of {string.Join(", ", QLoraNet.Training.Data.ChatTemplates.ChatKinds.Select(k => YamlNames.Of(k)))} or auto with data.format chat");
        if (c.Quantization.Aware is { } aware && c.Lora.Dropout > 0)
            throw root.Section("lora").ErrorAt("dropout",
                $"'lora.dropout' must be 0 with quantization.aware: {aware} trains the adapter inside the merged weight W + s·B·A, which has no separate input to drop");
        CheckObjective(c, root);
        bool hasValidation = c.Data.Validation != null || c.Data.ValFraction > 0;
        if (c.Training.EarlyStoppingPatience != null && !hasValidation)
            throw root.Section("training").ErrorAt("early_stopping_patience",
                "'training.early_stopping_patience' needs validation data; set 'data.validation' or 'data.val_fraction'");
    }
}
