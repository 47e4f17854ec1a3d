using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Peft;

[Trait("tier", "unit")]
public class AdapterFilesTests
{
    /// <summary>A model with LoRA whose B factors are random too, so that a load that skipped B would show.</summary>
    static (TinyTestModel model, AdapterConfig config) Trained(LoraSettings settings, int layers = 2, int hidden = 8, long? seed = null)
    {
        var model = new TinyTestModel(layers: layers, hidden: hidden);
        var wrapped = LoraApplier.Apply(model, settings, seed);
        using var g = new Generator(11);
        using (torch.no_grad())
            foreach (var (_, lora) in AdapterFiles.LoraModules(model)) lora.B.normal_(generator: g);
        return (model, AdapterConfig.From(settings, wrapped, "models/tiny"));
    }

    [Fact]
    public void SaveThenLoadIsBitIdentical()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4, Alpha: 8, Dropout: 0), seed: 3);
        using var _ = model;
        AdapterFiles.Save(dir["adapter"], model, config);

        using var fresh = new TinyTestModel(layers: 2, hidden: 8);
        var read = AdapterFiles.ApplyAndLoad(dir["adapter"], fresh);
        Assert.Equal(4, read.Lora.R);

        var loaded = fresh.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in model.named_parameters())
            Assert.True(Bits.Same(p, loaded[name]), name);
        using var x = torch.randn(3, 8);
        model.eval();
        fresh.eval();
        Assert.True(Bits.Same(model.forward(x), fresh.forward(x)));
    }

    [Fact]
    public void WritesPeftKeysShapesAndMetadata()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4, TargetModules: ["q_proj", "down_proj"]), layers: 1);
        using var _ = model;
        AdapterFiles.Save(dir.Path, model, config);

        using var f = SafeTensorsFile.Open(dir[AdapterFiles.WeightsFileName]);
        Assert.Equal(
            ["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
             "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"],
            f.Names.Order());
        Assert.Equal(new long[] { 4, 12 }, f.Info("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight").Shape);  // (r, in)
        Assert.Equal(new long[] { 8, 4 }, f.Info("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").Shape);   // (out, r)
        Assert.Equal(ScalarType.Float32, f.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").DType);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.True(File.Exists(dir[AdapterConfig.FileName]));
    }

    [Fact]
    public void SaveReplacesAnExistingAdapterAndLeavesNoStagingDirectories()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 2), layers: 1);
        using var _ = model;
        AdapterFiles.Save(dir["a"], model, config);
        File.WriteAllText(Path.Combine(dir["a"], "stale.txt"), "from an older save");
        AdapterFiles.Save(dir["a"], model, config);
        Assert.Equal(["a"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
        Assert.False(File.Exists(Path.Combine(dir["a"], "stale.txt")));
    }

    [Fact]
    public void ATensorForAModuleWithoutLoraIsNamed()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4), layers: 3);
        using var _ = model;
        AdapterFiles.Save(dir.Path, model, config);
        using var smaller = new TinyTestModel(layers: 2);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.ApplyAndLoad(dir.Path, smaller));
        Assert.Matches(@"tensor 'base_model\.model\.model\.layers\.2\.self_attn\.[qkvo]_proj\.lora_[AB]\.weight' \[\d, \d\] is for module 'model\.layers\.2\.self_attn\.[qkvo]_proj', which has no LoRA in the model", e.Message);
    }

    [Fact]
    public void AShapeMismatchNamesTheKeyAndTheModelsShape()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4, TargetModules: ["q_proj"]), layers: 1, hidden: 8);
        using var _ = model;
        AdapterFiles.Save(dir.Path, model, config);
        using var wider = new TinyTestModel(layers: 1, hidden: 16);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.ApplyAndLoad(dir.Path, wider));
        Assert.Matches(@"tensor 'base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight' is \[4, 8\] but the model's model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight is \[4, 16\]"
            + @"|tensor 'base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_B\.weight' is \[8, 4\] but the model's model\.layers\.0\.self_attn\.q_proj\.lora_B\.weight is \[16, 4\]", e.Message);
    }

    [Fact]
    public void ARankDifferentFromTheConfigIsAnError()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4, TargetModules: ["v_proj"]), layers: 1);
        using var _ = model;
        AdapterFiles.Save(dir.Path, model, config);
        EditConfig(dir.Path, json => json["r"] = 8);
        using var other = new TinyTestModel(layers: 1);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.ApplyAndLoad(dir.Path, other));
        Assert.Matches(@"tensor 'base_model\.model\.model\.layers\.0\.self_attn\.v_proj\.lora_[AB]\.weight' \[\d, \d\] has rank 4 but adapter_config\.json says r=8", e.Message);
    }

    [Fact]
    public void AMissingFactorIsAnError()
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4, TargetModules: ["q_proj"]), layers: 1);
        using var _ = model;
        AdapterFiles.Save(dir.Path, model, config);
        EditConfig(dir.Path, json => json["target_modules"] = new JsonArray("q_proj", "k_proj"));
        using var other = new TinyTestModel(layers: 1);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.ApplyAndLoad(dir.Path, other));
        Assert.Contains("target module 'k_proj' has no factors in", e.Message);
        Assert.Empty(AdapterFiles.LoraModules(other));  // refused from the headers, before any LoRA module was built
    }

    [Theory]
    [InlineData(60000, "has rank 4 but adapter_config.json says r=60000")]
    [InlineData(1000000, "r=1000000 must be in [1, 65536]")]
    [InlineData(2147483647, "r=2147483647 must be in [1, 65536]")]
    public void AHugeRankIsRefusedFromTheHeadersBeforeAnythingIsAllocated(int r, string expected)
    {
        using var dir = Paths.Temp();
        var (model, config) = Trained(new LoraSettings(R: 4, TargetModules: ["q_proj"]), layers: 1);
        using var _ = model;
        AdapterFiles.Save(dir.Path, model, config);
        EditConfig(dir.Path, json => json["r"] = r);
        using var other = new TinyTestModel(layers: 1);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.ApplyAndLoad(dir.Path, other));
        Assert.Contains(expected, e.Message);
        Assert.Empty(AdapterFiles.LoraModules(other));
    }

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        string path = Path.Combine(dir, AdapterConfig.FileName);
        var json = (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }
}
