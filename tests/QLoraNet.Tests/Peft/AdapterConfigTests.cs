using System.Text.Json.Nodes;
using QLoraNet.Peft;

namespace QLoraNet.Tests.Peft;

[Trait("tier", "unit")]
public class AdapterConfigTests
{
    static string Fixture => Path.Combine(Paths.RepoRoot, "tests", "QLoraNet.Tests", "Peft", "Fixtures", "adapter_config.r8-a16-qkvo.json");

    static AdapterConfig R8Alpha16() =>
        AdapterConfig.From(new LoraSettings(R: 8, Alpha: 16, Dropout: 0.05), [], "meta-llama/Llama-2-7b-hf");

    [Fact]
    public void WritesTheFieldsAndValuesPeftWrites()
    {
        using var dir = Paths.Temp();
        R8Alpha16().Save(dir.Path);
        var ours = (JsonObject)JsonNode.Parse(File.ReadAllText(dir[AdapterConfig.FileName]))!;
        var peft = (JsonObject)JsonNode.Parse(File.ReadAllText(Fixture))!;

        Assert.Equal(peft.Select(kv => kv.Key).Order(), ours.Select(kv => kv.Key).Order());
        foreach (var (key, expected) in peft)
        {
            if (key == "target_modules")  // peft serialises a set: its order is arbitrary
                Assert.Equal(Names(expected).Order(), Names(ours[key]).Order());
            else
                Assert.True(JsonNode.DeepEquals(expected, ours[key]), $"{key}: peft {expected?.ToJsonString()}, ours {ours[key]?.ToJsonString()}");
        }
    }

    static IEnumerable<string> Names(JsonNode? n) => ((JsonArray)n!).Select(x => x!.GetValue<string>());

    [Fact]
    public void ReadsPeftsFile()
    {
        var c = AdapterConfig.Load(Fixture);
        Assert.Equal(8, c.Lora.R);
        Assert.Equal(16, c.Lora.Alpha);
        Assert.Equal(0.05, c.Lora.Dropout);
        Assert.Equal(["k_proj", "o_proj", "q_proj", "v_proj"], c.Lora.Targets.Order());
        Assert.False(c.Lora.UseRsLora);
        Assert.Null(c.Lora.Layers);
        Assert.Equal("meta-llama/Llama-2-7b-hf", c.BaseModelNameOrPath);
        Assert.Equal("CAUSAL_LM", c.TaskType);
    }

    [Fact]
    public void RoundTripsThroughTheFile()
    {
        using var dir = Paths.Temp();
        var written = new AdapterConfig(new LoraSettings(16, 2.5, 0.1, UseRsLora: true, TargetModules: ["q_proj", "down_proj"], Layers: [0, 3]), BaseModelNameOrPath: "models/x");
        written.Save(dir.Path);
        var read = AdapterConfig.Load(dir.Path);
        Assert.Equal((16, 2.5, 0.1, true, "models/x"), (read.Lora.R, read.Lora.Alpha, read.Lora.Dropout, read.Lora.UseRsLora, read.BaseModelNameOrPath));
        Assert.Equal(written.Lora.Targets, read.Lora.Targets);
        Assert.Equal(written.Lora.Layers, read.Lora.Layers);
    }

    [Fact]
    public void AllLinearIsSavedAsTheExpandedNames()
    {
        var c = AdapterConfig.From(new LoraSettings(TargetModules: [LoraSettings.AllLinear]),
            ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"], null);
        Assert.Equal(["q_proj", "up_proj"], c.Lora.Targets);
    }

    [Fact]
    public void UnknownFieldsAreTolerated()
    {
        var json = Peft();
        json["a_field_from_peft_0_99"] = new JsonObject { ["x"] = 1 };
        json["another"] = "value";
        Assert.Equal(8, AdapterConfig.Parse(json, "adapter_config.json").Lora.R);
    }

    [Theory]
    [InlineData("use_dora", "true", "use_dora=true (DoRA, Liu et al. 2024) is not supported")]
    [InlineData("rank_pattern", """{"q_proj":16}""", "rank_pattern={\"q_proj\":16} (per-module ranks) is not supported")]
    [InlineData("alpha_pattern", """{"q_proj":32}""", "alpha_pattern={\"q_proj\":32} (per-module alphas) is not supported")]
    [InlineData("bias", "\"lora_only\"", "bias=\"lora_only\" (trained biases) is not supported")]
    [InlineData("modules_to_save", """["lm_head"]""", "modules_to_save=[\"lm_head\"] (fully trained extra modules) is not supported")]
    [InlineData("fan_in_fan_out", "true", "fan_in_fan_out=true (transposed (Conv1D) weights) is not supported")]
    [InlineData("init_lora_weights", "\"pissa\"", "init_lora_weights=\"pissa\" (an initialisation that changes the base weights) is not supported")]
    [InlineData("peft_type", "\"IA3\"", "peft_type 'IA3' is not supported; only LORA adapters can be loaded")]
    [InlineData("target_modules", "\".*proj\"", "target_modules=\".*proj\" (a regular expression) is not supported")]
    public void UnsupportedFeaturesAreRefusedByName(string key, string value, string expected)
    {
        var json = Peft();
        json[key] = JsonNode.Parse(value);
        var e = Assert.Throws<NotSupportedException>(() => AdapterConfig.Parse(json, "x/adapter_config.json"));
        Assert.StartsWith("x/adapter_config.json: " + expected, e.Message);
    }

    [Fact]
    public void DefaultsOfTheUnsupportedFeaturesAreAccepted()
    {
        var json = Peft();
        json["rank_pattern"] = null;
        json["bias"] = null;
        json["modules_to_save"] = new JsonArray();
        json["init_lora_weights"] = "gaussian";
        json["layers_pattern"] = "layers";
        json["layers_to_transform"] = 2;
        Assert.Equal([2], AdapterConfig.Parse(json, "adapter_config.json").Lora.Layers);
    }

    [Fact]
    public void BadValuesNameTheFieldAndTheValue()
    {
        var json = Peft();
        json["r"] = "eight";
        var e = Assert.Throws<InvalidDataException>(() => AdapterConfig.Parse(json, "a.json"));
        Assert.Equal("a.json: 'r' must be an integer, got \"eight\"", e.Message);
    }

    static JsonObject Peft() => (JsonObject)JsonNode.Parse(File.ReadAllText(Fixture))!;
}
