using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Tests.Peft;

namespace QLoraNet.Tests.Cli;

/// <summary>`merge` end to end on the tiny model with a non-zero adapter: the written directory, and that it generates.</summary>
[Trait("tier", "e2e")]
public class MergeTests
{
    static (int Code, string Stdout, string Stderr) Merge(params string[] extra) =>
        CliRunner.Run(["merge", "--model", Paths.TinyModel, .. extra]);

    static string Generate(params string[] extra)
    {
        var (code, stdout, stderr) = CliRunner.Run(["generate", "--prompt", "The whale", "--max-new-tokens", "16", "--json",
            "--device", "cpu", "--dtype", "fp32", .. extra]);
        Assert.True(code == 0, stderr);
        return stdout;
    }

    [Fact]
    public void The_merged_directory_generates_what_the_base_with_the_adapter_generates()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"], bScale: 0.1);
        var (code, stdout, stderr) = Merge("--adapter", adapter, "--out", tmp["merged"], "--dtype", "fp32");
        Assert.True(code == 0, stderr);
        Assert.Contains("merged 12 LoRA modules", stdout);

        string unmerged = Generate("--model", Paths.TinyModel, "--adapter", adapter);
        string merged = Generate("--model", tmp["merged"]);
        string original = Generate("--model", Paths.TinyModel);
        Assert.Equal(unmerged, merged);
        Assert.NotEqual(original, unmerged);  // the adapter really changes the continuation
    }

    [Fact]
    public void The_output_is_a_complete_sharded_checkpoint_with_config_and_tokenizer()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var (code, stdout, stderr) = Merge("--adapter", adapter, "--out", tmp["merged"], "--max-shard-size", "8MB");
        Assert.True(code == 0, stderr);
        Assert.Contains("38 tensors (bfloat16) in 2 shard(s)", stdout);

        string dir = tmp["merged"];
        foreach (var f in new[] { "config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json", CheckpointReader.IndexFile })
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        Assert.Equal(2, Directory.GetFiles(dir, "model-0000?-of-00002.safetensors").Length);  // the 16 MB embedding fills one
        using (var merged = CheckpointReader.Open(dir))
        using (var original = CheckpointReader.Open(Paths.TinyModel))
        {
            Assert.Equal(original.Names.Order(), merged.Names.Order());
            using var untouched = merged.Read("model.layers.1.self_attn.k_proj.weight");
            using var source = original.Read("model.layers.1.self_attn.k_proj.weight");
            Assert.True(Bits.Same(source, untouched));   // unadapted weights pass through bit for bit
            using var q = merged.Read("model.layers.1.self_attn.q_proj.weight");
            using var q0 = original.Read("model.layers.1.self_attn.q_proj.weight");
            Assert.False(Bits.Same(q0, q));
        }
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json")));
        Assert.Equal("bfloat16", config.RootElement.GetProperty("dtype").GetString());
        Assert.False(config.RootElement.TryGetProperty("quantization_config", out _));
        Assert.Equal(256, config.RootElement.GetProperty("hidden_size").GetInt32());
    }

    [Fact]
    public void A_non_empty_out_is_refused_and_overwrite_replaces_it_whole()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        Directory.CreateDirectory(tmp["out"]);
        File.WriteAllText(Path.Combine(tmp["out"], "stale.txt"), "keep me");

        var refused = Merge("--adapter", adapter, "--out", tmp["out"]);
        Assert.Equal(1, refused.Code);
        Assert.Equal($"error: output directory '{tmp["out"]}' exists and is not empty; pass --overwrite to replace it", refused.Stderr.TrimEnd());
        Assert.Equal("keep me", File.ReadAllText(Path.Combine(tmp["out"], "stale.txt")));

        var replaced = Merge("--adapter", adapter, "--out", tmp["out"], "--overwrite", "--dtype", "fp32");
        Assert.True(replaced.Code == 0, replaced.Stderr);
        Assert.False(File.Exists(Path.Combine(tmp["out"], "stale.txt")));
        Assert.True(File.Exists(Path.Combine(tmp["out"], CheckpointReader.SingleFile)));
        Assert.Equal(2, Directory.GetFileSystemEntries(tmp.Path).Length);  // adapter and out: no temp or old dirs left
    }

    [Fact]
    public void An_empty_out_directory_is_used()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        Directory.CreateDirectory(tmp["out"]);
        var (code, _, stderr) = Merge("--adapter", adapter, "--out", tmp["out"], "--dtype", "fp16");
        Assert.True(code == 0, stderr);
        using var ckpt = CheckpointReader.Open(tmp["out"]);
        Assert.Equal(TorchSharp.torch.ScalarType.Float16, ckpt.Info("model.norm.weight").DType);
    }

    [Theory]
    [InlineData("--max-shard-size", "lots", "--max-shard-size 'lots' is not a size")]
    [InlineData("--quantization", "int8", "--quantization 'int8' (int8) cannot be written for transformers")]
    [InlineData("--base", "nf5", "unknown base format 'nf5'")]
    public void Bad_options_are_one_line_errors(string option, string value, string expected)
    {
        using var tmp = Paths.Temp();
        var (code, _, stderr) = Merge("--adapter", tmp.Path, "--out", tmp["out"], option, value);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(Directory.Exists(tmp["out"]));
    }

    [Theory]
    [InlineData("5GB", 5_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("2GiB", 2L << 30)]
    [InlineData("1.5 KiB", 1536L)]
    [InlineData("4096", 4096L)]
    public void Shard_sizes_use_transformers_units(string text, long bytes) => Assert.Equal(bytes, QLoraNet.Cli.ShardSize.Parse(text));

    [Fact]
    public void An_adapter_for_another_architecture_is_a_one_line_error_and_writes_nothing()
    {
        using var tmp = Paths.Temp();
        string adapter = tmp["adapter"];
        Directory.CreateDirectory(adapter);
        new QLoraNet.Peft.AdapterConfig(new QLoraNet.Peft.LoraSettings(R: 4, Alpha: 8, Dropout: 0, TargetModules: ["o_proj"])).Save(adapter);
        const string module = "model.layers.1.self_attn.o_proj";   // a 4096-wide model's o_proj
        SafeTensors.Write(Path.Combine(adapter, QLoraNet.Peft.AdapterFiles.WeightsFileName), new Dictionary<string, TorchSharp.torch.Tensor>
        {
            [QLoraNet.Peft.AdapterKeys.ToPeft(module, "lora_A")] = TorchSharp.torch.zeros(4, 4096),
            [QLoraNet.Peft.AdapterKeys.ToPeft(module, "lora_B")] = TorchSharp.torch.zeros(4096, 4),
        });
        var (code, _, stderr) = Merge("--adapter", adapter, "--out", tmp["out"]);
        Assert.Equal(1, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains($"tensor 'base_model.model.{module}.lora_A.weight' is [4, 4096] but the model's '{module}.weight' is [256, 256] (in features 256)", stderr);
        Assert.False(Directory.Exists(tmp["out"]));
    }

    [Fact]
    public void A_missing_adapter_is_a_one_line_error()
    {
        using var tmp = Paths.Temp();
        var (code, _, stderr) = Merge("--adapter", tmp["nope"], "--out", tmp["out"]);
        Assert.Equal(1, code);
        Assert.Equal($"error: adapter directory '{tmp["nope"]}' does not exist", stderr.TrimEnd());
    }
}
