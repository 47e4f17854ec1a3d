using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Training.Config;

namespace QLoraNet.Tests.Training;

[Trait("tier", "unit")]
public sealed class ConfigTests : IDisposable
{
    readonly TempDir dir = Paths.Temp();
    readonly string train;

    public ConfigTests()
    {
        train = dir["train.jsonl"];
        File.WriteAllText(train, "{\"text\": \"hello\"}\n");
    }

    public void Dispose() => dir.Dispose();

    // A minimal valid config; line 1 is "model:", line 2 its path, line 3 "data:", line 4 the train file.
    string Minimal => $"model:\n  path: {Paths.TinyModel}\ndata:\n  train: {train}\n";

    TrainConfig Parse(string yaml, params string[] overrides) => TrainConfig.Parse(yaml, "x.yaml", overrides);

    string ErrorOf(string yaml, params string[] overrides) =>
        Assert.Throws<ConfigException>(() => Parse(yaml, overrides)).Message;

    [Fact]
    public void Minimal_config_gets_the_documented_defaults()
    {
        var c = Parse(Minimal);
        Assert.Equal(DType.Bf16, c.Model.Dtype);
        Assert.Equal(DeviceKind.Auto, c.Model.Device);
        Assert.Equal(new QuantizationConfig(BaseFormat.Parse("nf4-dq"), DType.Bf16), c.Quantization);
        Assert.Equal(16, c.Lora.R);
        Assert.Equal(32.0, c.Lora.Alpha);
        Assert.Equal(2.0, c.Lora.Scaling);
        Assert.Equal(LoraSettings.DefaultTargets, c.Lora.TargetModules);
        Assert.Null(c.Lora.Layers);
        Assert.Equal(DataFormat.Chat, c.Data.Format);
        Assert.Equal(TemplateKind.Auto, c.Data.Template);
        Assert.Equal(SystemRole.Native, c.Data.SystemRole);
        Assert.Equal(512, c.Data.MaxSeqLen);
        Assert.Equal(new[] { train }, c.Data.Train);
        Assert.Equal(new TrainingConfig(), c.Training);
        Assert.Equal(2e-4, c.Training.LearningRate);
        Assert.Equal(0.3, c.Training.MaxGradNorm);
        Assert.Equal(Path.Combine("runs", "x"), c.Output.Dir);
        Assert.Equal(3, c.Output.KeepLast);
    }

    [Fact]
    public void Unknown_key_names_file_line_and_the_valid_keys()
    {
        string msg = ErrorOf(Minimal + "lora:\n  r: 8\n  rank: 4\n");
        Assert.Equal("x.yaml:7: unknown key 'lora.rank'; valid keys in 'lora': r, alpha, dropout, target_modules, layers, rslora, init_from", msg);
    }

    [Fact]
    public void Unknown_top_level_key_is_reported_before_the_missing_key_it_hides()
    {
        string msg = ErrorOf($"modle:\n  path: {Paths.TinyModel}\ndata:\n  train: {train}\n");
        Assert.StartsWith("x.yaml:1: unknown key 'modle'; valid keys at the top level: model, quantization, lora, data, training, output", msg);
    }

    [Fact]
    public void Missing_required_key_is_named()
    {
        Assert.Equal("x.yaml:1: missing required key 'model.path'", ErrorOf($"model:\n  dtype: bf16\ndata:\n  train: {train}\n"));
        Assert.Contains("missing required key 'data.train'", ErrorOf($"model:\n  path: {Paths.TinyModel}\n"));
    }

    [Fact]
    public void Wrong_type_gives_line_and_expected_type()
    {
        Assert.Equal("x.yaml:6: 'training.learning_rate' must be a number in (0, 1]; got 'abc'",
            ErrorOf(Minimal + "training:\n  learning_rate: abc\n"));
        Assert.Equal("x.yaml:6: 'lora.r' must be an integer in [1, 4096]; got '8.5'", ErrorOf(Minimal + "lora:\n  r: 8.5\n"));
        Assert.Equal("x.yaml:4: 'data.packing' must be true or false; got 'maybe'",
            ErrorOf(Minimal.Replace("data:\n", "data:\n  packing: maybe\n")));
        Assert.Contains("'lora' must be a mapping of keys (a section); got '8'", ErrorOf(Minimal + "lora: 8\n"));
    }

    [Fact]
    public void Bad_enum_value_lists_the_choices()
    {
        Assert.Equal("x.yaml:6: 'quantization.type' must be one of none, bf16, fp16, fp32, nf4, fp4, int8, int4, int3, llm-int8, hqq2, hqq3, hqq4, hqq8, ternary, q4_0, q8_0, gptq2, gptq3, gptq4, gptq8, awq4, smoothquant (or a whole spelling such as nf4-dq); got 'nf5'",
            ErrorOf(Minimal + "quantization:\n  type: nf5\n"));
        Assert.Equal("x.yaml:4: 'data.template' must be one of auto, llama2-chat, llama3, chatml, mistral-instruct, gemma, alpaca, none; got 'vicuna'",
            ErrorOf(Minimal.Replace("data:\n", "data:\n  template: vicuna\n")));
        Assert.Equal("x.yaml:4: 'data.system_role' must be one of native, fold; got 'merge'",
            ErrorOf(Minimal.Replace("data:\n", "data:\n  system_role: merge\n")));
        Assert.Equal(SystemRole.Fold, Parse(Minimal, "data.system_role=fold").Data.SystemRole);
    }

    [Fact]
    public void Out_of_range_and_inconsistent_values_are_errors()
    {
        Assert.Contains("'lora.dropout' must be a number in [0, 1]; got '1.5'", ErrorOf(Minimal + "lora:\n  dropout: 1.5\n"));
        Assert.Contains("'quantization.blocksize' must be a power of two", ErrorOf(Minimal + "quantization:\n  blocksize: 100\n"));
        Assert.Contains("set 'training.warmup_steps' or 'training.warmup_ratio', not both",
            ErrorOf(Minimal + "training:\n  warmup_steps: 10\n  warmup_ratio: 0.1\n"));
        Assert.Contains("'lora.target_modules' has unknown module 'qproj'", ErrorOf(Minimal + "lora:\n  target_modules: [qproj]\n"));
        Assert.Contains("needs validation data", ErrorOf(Minimal + "training:\n  early_stopping_patience: 3\n"));
        Assert.Contains("'quantization.double_quant' applies to nf4, fp4 only; remove it for int8", ErrorOf(Minimal + "quantization:\n  type: int8\n  double_quant: true\n"));
    }

    [Fact]
    public void Uncheckpointed_layers_default_to_one_apply_with_checkpointing_and_round_trip()
    {
        Assert.Equal(1, Parse(Minimal).Training.UncheckpointedLayers);
        var c = Parse(Minimal + "training:\n  uncheckpointed_layers: 4\n");
        Assert.Equal(4, c.Training.UncheckpointedLayers);
        Assert.Contains("uncheckpointed_layers: 4", c.ToYaml());
        Assert.Equal(4, Parse(c.ToYaml()).Training.UncheckpointedLayers);
        Assert.DoesNotContain("uncheckpointed_layers", Parse(Minimal).ToYaml());      // the default is not written
        Assert.Contains("'training.uncheckpointed_layers' must be", ErrorOf(Minimal + "training:\n  uncheckpointed_layers: -1\n"));
        Assert.Contains("'training.uncheckpointed_layers' applies with 'training.gradient_checkpointing: true' only",
            ErrorOf(Minimal + "training:\n  gradient_checkpointing: false\n  uncheckpointed_layers: 2\n"));
        Assert.Equal(0, Parse(Minimal + "training:\n  uncheckpointed_layers: 0\n").Training.UncheckpointedLayers);
    }

    /// <summary>The training keys that only move memory between the device and the host, or trade it for time:
    /// (key, its default, whether it applies with checkpointing only).</summary>
    public static TheoryData<string, bool, bool> MemoryKeys => new()
    {
        { "embedding_on_host", false, false },
        { "optimizer_on_host", false, false },
        { "keep_dequantized_weights", true, true },
        { "checkpoints_on_host", false, true },
    };

    static readonly Dictionary<string, Func<TrainingConfig, bool>> MemoryKeyValue = new()
    {
        ["embedding_on_host"] = t => t.EmbeddingOnHost,
        ["optimizer_on_host"] = t => t.OptimizerOnHost,
        ["keep_dequantized_weights"] = t => t.KeepDequantizedWeights,
        ["checkpoints_on_host"] = t => t.CheckpointsOnHost,
    };

    [Theory]
    [MemberData(nameof(MemoryKeys))]
    public void A_memory_key_has_its_default_round_trips_refuses_a_non_bool_and_is_free_on_resume(string key, bool byDefault, bool needsCheckpointing)
    {
        var value = MemoryKeyValue[key];
        string other = (!byDefault).ToString().ToLowerInvariant();
        Assert.Equal(byDefault, value(Parse(Minimal).Training));
        var c = Parse(Minimal + $"training:\n  {key}: {other}\n");
        Assert.Equal(!byDefault, value(c.Training));
        Assert.Equal(!byDefault, value(Parse(c.ToYaml()).Training));
        Assert.DoesNotContain(key, Parse(Minimal).ToYaml());                          // the default is not written
        Assert.Contains($"'training.{key}'", ErrorOf(Minimal + $"training:\n  {key}: maybe\n"));
        if (needsCheckpointing)
            Assert.Contains($"'training.{key}' applies with 'training.gradient_checkpointing: true' only",
                ErrorOf(Minimal + $"training:\n  gradient_checkpointing: false\n  {key}: {other}\n"));
        Assert.Contains($"training.{key}", QLoraNet.Training.Trainer.ResumeCompatibility.FreeKeys);
    }

    [Fact]
    public void Empty_required_value_and_chat_with_alpaca_are_errors()
    {
        Assert.Equal("x.yaml:2: 'model.path' must be a non-empty string; got ''", ErrorOf(Minimal.Replace(Paths.TinyModel, "\"\"")));
        Assert.Equal("x.yaml:4: 'data.template' alpaca renders instruction rows only; use one of llama2-chat, llama3, chatml, mistral-instruct, gemma, none or auto with data.format chat",
            ErrorOf(Minimal.Replace("data:\n", "data:\n  template: alpaca\n")));
        Assert.Equal(TemplateKind.Alpaca, Parse(Minimal, "data.format=instruction", "data.template=alpaca").Data.Template);
    }

    [Fact]
    public void Yaml_null_means_the_default()
    {
        var c = Parse(Minimal + "lora:\n  r: ~\n  target_modules:\ntraining:\n  seed: null\n");
        Assert.Equal((16, 42), (c.Lora.R, c.Training.Seed));
        Assert.Equal(LoraSettings.DefaultTargets, c.Lora.TargetModules);
    }

    [Fact]
    public void Int8_defaults_to_no_double_quant()
    {
        Assert.Equal("int8", Parse(Minimal, "quantization.type=int8").Quantization.Format.ToString());
    }

    [Fact]
    public void Missing_files_are_errors_with_the_line_of_the_key()
    {
        string msg = ErrorOf(Minimal.Replace(train, "nope/train.jsonl"));
        Assert.StartsWith("x.yaml:4: 'data.train' file 'nope/train.jsonl' not found", msg);
        Assert.StartsWith("x.yaml:2: model directory 'nope' not found", ErrorOf(Minimal.Replace(Paths.TinyModel, "nope")));
        Assert.Contains("unsupported extension", ErrorOf(Minimal.Replace("train.jsonl", "train.parquet")));
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Load(dir["absent.yaml"]));
        Assert.StartsWith($"config file '{dir["absent.yaml"]}' not found", e.Message);
    }

    [Fact]
    public void Malformed_yaml_names_the_line()
    {
        string msg = ErrorOf(Minimal + "lora:\n  r: 8\n alpha: 16\n");
        Assert.Matches(@"^x\.yaml:7: malformed YAML: ", msg);
        Assert.DoesNotContain("\n", msg);
        Assert.Equal("x.yaml:6: malformed YAML: unclosed '[' (no matching ']')", ErrorOf(Minimal + "lora:\n  r: [8\n  alpha: 16\n"));
    }

    [Fact]
    public void Overrides_replace_values_create_sections_and_parse_lists()
    {
        var c = Parse(Minimal + "training:\n  learning_rate: 0.001\n",
            "training.learning_rate=1e-4", "lora.target_modules=[q_proj,v_proj]", "lora.layers=[0, 3]",
            "data.max_seq_len=256", "training.max_steps=50");
        Assert.Equal(1e-4, c.Training.LearningRate);
        Assert.Equal(new[] { "q_proj", "v_proj" }, c.Lora.TargetModules);
        Assert.Equal(new[] { 0, 3 }, c.Lora.Layers);
        Assert.Equal(256, c.Data.MaxSeqLen);
        Assert.Equal(50, c.Training.TotalSteps(1000));
        Assert.Null(Parse(Minimal + "training:\n  max_steps: 5\n", "training.max_steps=null").Training.MaxSteps);
    }

    [Fact]
    public void Override_errors_point_at_the_override()
    {
        Assert.Equal("override 'lora.rank=8': unknown key 'lora.rank'; valid keys in 'lora': r, alpha, dropout, target_modules, layers, rslora, init_from",
            ErrorOf(Minimal, "lora.rank=8"));
        Assert.Equal("override 'training.seed=x': 'training.seed' must be an integer >= 0; got 'x'", ErrorOf(Minimal, "training.seed=x"));
        Assert.Contains("expected key=value", ErrorOf(Minimal, "training.seed"));
        Assert.Contains("'model.path' is a value, not a section", ErrorOf(Minimal, "model.path.x=1"));
    }

    [Fact]
    public void ToYaml_round_trips_the_resolved_config()
    {
        var c = Parse(Minimal.Replace("data:\n", "data:\n  system_prompt: |\n    Line one: 'quoted'.\n    Line two # not a comment\n"),
            "lora.layers=[1,2]", "training.warmup_steps=5", "output.dir=runs/a b", "data.train=" + train, "data.columns.output=123");
        string yaml = c.ToYaml();
        var back = Parse(yaml);
        Assert.Equal(yaml, back.ToYaml());
        Assert.Equal(c.Training, back.Training);
        Assert.Equal(c.Lora.Layers, back.Lora.Layers);
        Assert.Equal("Line one: 'quoted'.\nLine two # not a comment\n", back.Data.SystemPrompt);
        Assert.Equal("123", back.Data.Columns.Output);
        Assert.Contains("warmup_steps: 5", yaml);
        Assert.DoesNotContain("warmup_ratio", yaml);
        Assert.DoesNotContain("...", yaml);
    }

    [Fact]
    public void Schedule_helpers_compute_steps_and_warmup()
    {
        var t = new TrainingConfig(Epochs: 2, GradientAccumulationSteps: 4, WarmupRatio: 0.1);
        Assert.Equal(50, t.TotalSteps(100)); // 2 epochs x 100 micro-batches / 4
        Assert.Equal(5, t.Warmup(50));
        Assert.Equal(7, (t with { WarmupSteps = 7 }).Warmup(50));
    }

    [Fact]
    public void A_base_format_has_one_meaning_in_yaml_scalar_yaml_keys_and_on_the_command_line()
    {
        BaseFormat Yaml(string section) => Parse(Minimal + section).Quantization.Format;
        Assert.Equal(BaseFormat.Parse("nf4-dq"), Yaml("quantization: nf4-dq\n"));
        Assert.Equal(BaseFormat.Parse("nf4-dq"), Yaml("quantization:\n  type: nf4\n  double_quant: true\n  blocksize: 64\n"));
        Assert.Equal(BaseFormat.Parse("nf4"), Yaml("quantization:\n  type: nf4\n"));
        Assert.Equal(BaseFormat.Parse("fp4-b128-dq"), Yaml("quantization:\n  type: fp4\n  double_quant: true\n  blocksize: 128\n"));
        // int4 is per channel in both places; a blocksize makes it per group, as -g does.
        Assert.Equal(BaseFormat.Parse("int4"), Yaml("quantization:\n  type: int4\n"));
        Assert.Equal(BaseFormat.Parse("int4-g64"), Yaml("quantization:\n  type: int4\n  blocksize: 64\n"));
        Assert.Equal(BaseFormat.Parse("int4-g64-asym"), Yaml("quantization:\n  type: int4-g64-asym\n  compute_dtype: fp32\n"));
        Assert.Equal(BaseFormat.Parse("llm-int8"), Yaml("quantization: llm-int8\n"));
        Assert.Equal(BaseFormat.Parse("llm-int8-t4"), Yaml("quantization:\n  type: llm-int8\n  threshold: 4\n"));
        Assert.Equal(BaseFormat.Parse("hqq3-g128"), Yaml("quantization:\n  type: hqq3\n  group_size: 128\n"));
        Assert.Equal(BaseFormat.Parse("ternary"), Yaml("quantization: ternary\n"));
        Assert.Contains("'quantization': base format 'llm-int8-t0': threshold must be a number above 0", ErrorOf(Minimal + "quantization: llm-int8-t0\n"));
        Assert.Contains("'quantization.threshold' applies to llm-int8 only; remove it for hqq4", ErrorOf(Minimal + "quantization:\n  type: hqq4\n  threshold: 4\n"));
        Assert.Contains("'quantization.group_size' must be a multiple of 8", ErrorOf(Minimal + "quantization:\n  type: hqq4\n  group_size: 12\n"));
        // No type: QLoRA's default, nf4 with double quantization.
        Assert.Equal(BaseFormat.Parse("nf4-b128-dq"), Yaml("quantization:\n  blocksize: 128\n"));
        Assert.Equal("x.yaml:5: 'quantization': base format 'nf4-b8': blocksize must be a power of two in [16, 4096]; got 8",
            ErrorOf(Minimal + "quantization: nf4-b8\n"));
        // A key another kind reads is fine at a default value (a config whose type is overridden), an error otherwise.
        Assert.Equal(BaseFormat.Parse("none"), Yaml("quantization:\n  type: none\n  double_quant: false\n  blocksize: 64\n"));
        Assert.Contains("'quantization.blocksize' applies to nf4, fp4, int8, int4, int3, gptq2, gptq3, gptq4, gptq8, awq4 only; remove it for bf16",
            ErrorOf(Minimal + "quantization:\n  type: bf16\n  blocksize: 128\n"));
        Assert.Contains("give the options in it or as keys, not both", ErrorOf(Minimal + "quantization:\n  type: nf4-dq\n  blocksize: 128\n"));
        // The resolved config writes the spelling back, and reads it as the same value.
        var c = Parse(Minimal + "quantization:\n  type: int4\n  blocksize: 32\n");
        Assert.Contains("type: int4-g32", c.ToYaml());
        Assert.Equal(c.Quantization, Parse(c.ToYaml()).Quantization);
    }

    [Fact]
    public void The_model_family_is_checked_at_the_model_path_line_and_decides_the_lora_names()
    {
        using var model = Paths.Temp();
        File.WriteAllText(model["config.json"], """{"architectures":["Phi3ForCausalLM"],"model_type":"phi3"}""");
        Assert.StartsWith("x.yaml:2: " + model["config.json"] + ": architecture Phi3ForCausalLM is not supported",
            ErrorOf(Minimal.Replace(Paths.TinyModel, model.Path)));
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            Parse(Minimal, "lora.target_modules=all-linear").Lora.Targets);
    }
}
