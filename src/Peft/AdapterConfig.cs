using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using QLoraNet.Formats;

namespace QLoraNet.Peft;

/// <summary>
/// peft's <c>adapter_config.json</c> for a LoRA adapter: the <see cref="LoraSettings"/> (what the adapter computes)
/// plus the file's own metadata (base model, revision, task type). Written
/// with every field peft's LoraConfig dataclass serialises (peft 0.20.0, `dataclasses.asdict` minus
/// `runtime_config`, keys sorted as `json.dumps(sort_keys=True)` does), so peft loads our adapters as its own.
/// Read tolerantly (unknown fields from newer peft versions are ignored), but a field that would change what the
/// adapter computes and that we do not implement (DoRA, per-module ranks, trained biases, ...) is refused by name.
/// </summary>
public sealed record AdapterConfig(
    LoraSettings Lora,
    string? BaseModelNameOrPath = null,
    string? Revision = null,
    string? TaskType = "CAUSAL_LM",
    bool InferenceMode = true)
{
    public const string FileName = "adapter_config.json";

    /// <summary>What the adapter was trained on (<see cref="AdapterProvenance.FileName"/> beside the config); null when unknown.</summary>
    public AdapterProvenance? Provenance { get; init; }

    /// <summary>The peft release whose LoraConfig field set <see cref="ToJson"/> mirrors.</summary>
    public const string PeftVersion = "0.20.0";

    /// <summary>
    /// The config describing LoRA applied with <paramref name="settings"/>. For "all-linear", peft saves the module
    /// names it expanded the shorthand to, so <paramref name="wrappedPaths"/> (what Apply returned) supplies them.
    /// </summary>
    public static AdapterConfig From(LoraSettings settings, IReadOnlyList<string> wrappedPaths, string? baseModelNameOrPath) =>
        new(settings with
        {
            TargetModules = settings.IsAllLinear ? wrappedPaths.Select(LoraApplier.LeafName).Distinct().Order(StringComparer.Ordinal).ToList()
                                                 : settings.Targets,
        }, baseModelNameOrPath);

    // ---- reading ----

    public static AdapterConfig Load(string pathOrDir)
    {
        string path = Directory.Exists(pathOrDir) ? Path.Combine(pathOrDir, FileName) : pathOrDir;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found (a peft adapter directory needs an {FileName})", path);
        var root = UserFile.ReadJsonNode(path, what: "adapter config");
        if (root is not JsonObject obj) throw new InvalidDataException($"{path}: expected a JSON object");
        return Parse(obj, path) with { Provenance = AdapterProvenance.Load(Path.GetDirectoryName(Path.GetFullPath(path))!) };
    }

    /// <summary>Reads the fields we use, refusing unsupported features; <paramref name="source"/> names the file in errors.</summary>
    public static AdapterConfig Parse(JsonObject json, string source)
    {
        string peftType = json["peft_type"]?.GetValueKind() == JsonValueKind.String ? json["peft_type"]!.GetValue<string>() : "(missing)";
        if (peftType != "LORA")
            throw new NotSupportedException($"{source}: peft_type {SafeText.Quote(peftType)} is not supported; only LORA adapters can be loaded");
        foreach (var feature in Unsupported)
        {
            var node = json[feature.Key];
            if (!feature.IsPlainLora(node))
                throw new NotSupportedException($"{source}: {feature.Key}={Compact(node)} ({feature.What}) is not supported; {feature.Remedy}");
        }

        int r = RequireInt(json, "r", source);
        if (r <= 0 || r > LoraSettings.MaxRank) throw new InvalidDataException($"{source}: r={r} must be in [1, {LoraSettings.MaxRank}]");
        double dropout = OptionalNumber(json, "lora_dropout", source) ?? 0.0;
        return new AdapterConfig(
            new LoraSettings(
                R: r,
                Alpha: OptionalNumber(json, "lora_alpha", source) ?? 8.0,  // peft's default
                Dropout: dropout,
                UseRsLora: OptionalBool(json, "use_rslora", source) ?? false,
                TargetModules: ReadTargets(json["target_modules"], source),
                Layers: ReadLayers(json["layers_to_transform"], source)),
            BaseModelNameOrPath: OptionalString(json, "base_model_name_or_path", source),
            Revision: OptionalString(json, "revision", source),
            TaskType: OptionalString(json, "task_type", source),
            InferenceMode: OptionalBool(json, "inference_mode", source) ?? true);
    }

    /// <summary>A config field that changes what the adapter computes, with the value(s) meaning "plain LoRA".</summary>
    private sealed record Feature(string Key, string What, Func<JsonNode?, bool> IsPlainLora, string Remedy);

    private const string RetrainOrConvert = "use an adapter trained as plain LoRA";

    private static readonly Feature[] Unsupported =
    [
        new("use_dora", "DoRA, Liu et al. 2024", IsFalse, RetrainOrConvert),
        new("rank_pattern", "per-module ranks", IsEmpty, "use one rank for every module"),
        new("alpha_pattern", "per-module alphas", IsEmpty, "use one alpha for every module"),
        new("bias", "trained biases", n => n is null || n.GetValueKind() == JsonValueKind.Null || IsString(n, "none"), "use bias \"none\""),
        new("modules_to_save", "fully trained extra modules", IsEmpty, "train with LoRA modules only"),
        new("fan_in_fan_out", "transposed (Conv1D) weights", IsFalse, "use a model with nn.Linear layers"),
        new("lora_bias", "a bias on lora_B", IsFalse, RetrainOrConvert),
        new("use_qalora", "QA-LoRA pooling", IsFalse, RetrainOrConvert),
        new("exclude_modules", "excluded module names", IsEmpty, "list the wanted modules in target_modules instead"),
        new("layer_replication", "replicated layers", IsEmpty, RetrainOrConvert),
        new("trainable_token_indices", "trained token embeddings", IsEmpty, RetrainOrConvert),
        new("target_parameters", "LoRA on raw parameters", IsEmpty, RetrainOrConvert),
        new("alora_invocation_tokens", "activated LoRA", IsEmpty, RetrainOrConvert),
        new("megatron_config", "Megatron parallel layers", IsEmpty, RetrainOrConvert),
        new("velora_config", "VeLoRA", IsEmpty, RetrainOrConvert),
        new("monteclora_config", "MonteCLoRA", IsEmpty, RetrainOrConvert),
        new("use_bdlora", "block-diagonal LoRA", IsEmpty, RetrainOrConvert),
        new("arrow_config", "Arrow routing", IsEmpty, RetrainOrConvert),
        // PiSSA/OLoRA/LoftQ/CorDA/LoRA-GA initialisations rewrite the base weights; peft converts such an adapter to
        // plain LoRA (init_lora_weights true) when saved with path_initial_model_for_weight_conversion.
        new("init_lora_weights", "an initialisation that changes the base weights",
            n => n is null || n.GetValueKind() is JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null || IsString(n, "gaussian"),
            "save it from peft with path_initial_model_for_weight_conversion to get plain LoRA"),
        new("layers_pattern", "a layer container other than `layers`",
            n => IsEmpty(n) || (n is not null && IsString(n, "layers")) || (n is JsonArray a && a.All(x => x is not null && IsString(x, "layers"))),
            "name the decoder layers `layers`"),
    ];

    private static bool IsFalse(JsonNode? n) => n is null || n.GetValueKind() is JsonValueKind.False or JsonValueKind.Null;

    private static bool IsEmpty(JsonNode? n) => n switch
    {
        null => true,
        JsonObject o => o.Count == 0,
        JsonArray a => a.Count == 0,
        _ => n.GetValueKind() == JsonValueKind.Null,
    };

    private static bool IsString(JsonNode n, string value) => n.GetValueKind() == JsonValueKind.String && n.GetValue<string>() == value;

    private static string Compact(JsonNode? n) => n is null ? "null" : SafeText.Clip(n.ToJsonString(), 80);

    private static IReadOnlyList<string> ReadTargets(JsonNode? node, string source)
    {
        switch (node)
        {
            case JsonArray a when a.Count > 0 && a.All(x => x?.GetValueKind() == JsonValueKind.String):
                return a.Select(x => x!.GetValue<string>()).ToList();
            case JsonValue v when v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() == LoraSettings.AllLinear:
                return [LoraSettings.AllLinear];
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                throw new NotSupportedException(
                    $"{source}: target_modules=\"{SafeText.Clip(v.GetValue<string>())}\" (a regular expression) is not supported; list the module names instead");
            default:
                throw new InvalidDataException($"{source}: target_modules={Compact(node)} must be a non-empty list of module names");
        }
    }

    private static IReadOnlyList<int>? ReadLayers(JsonNode? node, string source)
    {
        if (IsEmpty(node)) return null;
        if (node is JsonValue single && TryInt(single, out int one)) return [one];  // peft allows a single int
        if (node is JsonArray a)
        {
            var layers = new List<int>();
            foreach (var x in a)
            {
                if (x is not JsonValue v || !TryInt(v, out int i)) break;
                layers.Add(i);
            }
            if (layers.Count == a.Count) return layers;
        }
        throw new InvalidDataException($"{source}: layers_to_transform={Compact(node)} must be a layer index or a list of them");
    }

    private static bool TryInt(JsonValue v, out int i)
    {
        i = 0;
        if (v.GetValueKind() != JsonValueKind.Number) return false;
        double d = AsDouble(v);
        if (d != Math.Floor(d) || d < int.MinValue || d > int.MaxValue) return false;
        i = (int)d;
        return true;
    }

    /// <summary>A number node as a double, whether parsed from text or built from a C# int.</summary>
    private static double AsDouble(JsonValue v) => double.Parse(v.ToJsonString(), CultureInfo.InvariantCulture);

    private static int RequireInt(JsonObject json, string key, string source) =>
        json[key] is JsonValue v && TryInt(v, out int i) ? i
            : throw new InvalidDataException($"{source}: '{key}' must be an integer, got {Compact(json[key])}");

    private static double? OptionalNumber(JsonObject json, string key, string source) => json[key] switch
    {
        null => null,
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => AsDouble(v),
        var n => throw new InvalidDataException($"{source}: '{key}' must be a number, got {Compact(n)}"),
    };

    private static bool? OptionalBool(JsonObject json, string key, string source) => json[key] switch
    {
        null => null,
        var n when n.GetValueKind() is JsonValueKind.True or JsonValueKind.False => n.GetValue<bool>(),
        var n when n.GetValueKind() == JsonValueKind.Null => null,
        var n => throw new InvalidDataException($"{source}: '{key}' must be true or false, got {Compact(n)}"),
    };

    private static string? OptionalString(JsonObject json, string key, string source) => json[key] switch
    {
        null => null,
        var n when n.GetValueKind() == JsonValueKind.String => n.GetValue<string>(),
        var n when n.GetValueKind() == JsonValueKind.Null => null,
        var n => throw new InvalidDataException($"{source}: '{key}' must be a string, got {Compact(n)}"),
    };

    // ---- writing ----

    /// <summary>The JSON peft writes for this config: our fields plus every other LoraConfig field at its default.</summary>
    public JsonObject ToJson()
    {
        var fields = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            // PeftConfigMixin / PeftConfig
            ["auto_mapping"] = null,  // set by peft only for custom (non-transformers) model classes
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["inference_mode"] = InferenceMode,  // peft sets it true while saving
            ["peft_type"] = "LORA",
            ["peft_version"] = PeftVersion,
            ["revision"] = Revision,
            ["task_type"] = TaskType,
            // LoraConfig: the fields we implement
            ["r"] = Lora.R,
            ["lora_alpha"] = Number(Lora.Alpha),
            ["lora_dropout"] = Lora.Dropout,
            ["target_modules"] = new JsonArray(Lora.Targets.Select(t => (JsonNode?)t).ToArray()),
            ["use_rslora"] = Lora.UseRsLora,
            ["layers_to_transform"] = Lora.Layers is null ? null : new JsonArray(Lora.Layers.Select(i => (JsonNode?)i).ToArray()),
            // LoraConfig: everything else, at peft's defaults
            ["alora_invocation_tokens"] = null,
            ["alpha_pattern"] = new JsonObject(),
            ["arrow_config"] = null,
            ["bias"] = "none",
            ["corda_config"] = null,
            ["ensure_weight_tying"] = false,
            ["eva_config"] = null,
            ["exclude_modules"] = null,
            ["fan_in_fan_out"] = false,
            ["init_lora_weights"] = true,
            ["layer_replication"] = null,
            ["layers_pattern"] = null,
            ["loftq_config"] = new JsonObject(),
            ["lora_bias"] = false,
            ["lora_ga_config"] = null,
            ["megatron_config"] = null,
            ["megatron_core"] = "megatron.core",
            ["modules_to_save"] = null,
            ["monteclora_config"] = null,
            ["qalora_group_size"] = 16,
            ["rank_pattern"] = new JsonObject(),
            ["target_parameters"] = null,
            ["trainable_token_indices"] = null,
            ["use_bdlora"] = null,
            ["use_dora"] = false,
            ["use_qalora"] = false,
            ["velora_config"] = null,
        };
        return new JsonObject(fields);
    }

    /// <summary>Writes <see cref="FileName"/> into <paramref name="directory"/> (indent 2, sorted keys, like peft), and
    /// the provenance sidecar when known.</summary>
    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, FileName), ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Provenance?.Save(directory);
    }

    /// <summary>peft's lora_alpha is an int; keep integral values integral so the file reads `16`, not `16.0`.</summary>
    private static JsonNode Number(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e15 ? JsonValue.Create((long)value) : JsonValue.Create(value);
}
