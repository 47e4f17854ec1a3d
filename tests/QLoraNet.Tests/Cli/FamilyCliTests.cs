using QLoraNet.Formats;
using QLoraNet.Tests.Models.Families;
using QLoraNet.Tests.Peft;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Cli;

/// <summary>
/// The verbs on each family fixture: `merge` then `logits` on the merged directory equals `logits --adapter` on the
/// base, and the base's logits meet the transformers reference; `merge` then `generate` equals `generate --adapter`
/// (greedy, the family's chat template around the prompt).
/// </summary>
[Trait("tier", "e2e")]
public class FamilyCliTests
{
    static Tensor LogitsVia(string outFile, params string[] args)
    {
        var (code, _, stderr) = CliRunner.Run(["logits", "--device", "cpu", "--dtype", "fp32", "--out", outFile, .. args]);
        Assert.True(code == 0, stderr);
        using var file = SafeTensorsFile.Open(outFile);
        return file.Read("logits")[0];                                                    // (T, vocab)
    }

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void Merge_then_logits_equals_logits_with_the_adapter(string family)
    {
        using var tmp = Paths.Temp();
        var r = FamilyReference.Of(family);
        string ids = string.Join(",", r.Cases[0].InputIds);
        string adapter = FamilyLora.NonZeroAdapter(family, tmp["adapter"]);
        var (code, stdout, stderr) = CliRunner.Run("merge", "--model", r.Dir, "--adapter", adapter, "--out", tmp["merged"], "--dtype", "fp32");
        Assert.True(code == 0, stderr);
        Assert.Contains($"merged {7 * ModelFamilies.Load(r.Dir).NumLayers} LoRA modules", stdout);

        using var unmerged = LogitsVia(tmp["a.safetensors"], "--model", r.Dir, "--adapter", adapter, "--ids", ids);
        using var merged = LogitsVia(tmp["b.safetensors"], "--model", tmp["merged"], "--ids", ids);
        using var plain = LogitsVia(tmp["c.safetensors"], "--model", r.Dir, "--ids", ids);
        Assert.True((unmerged - merged).abs().max().item<float>() < 1e-4, family);
        Assert.True((unmerged - plain).abs().max().item<float>() > 0.1, $"{family}: the adapter must change the logits");
        Assert.True((plain[-1] - tensor(r.Cases[0].LastLogits)).abs().max().item<float>() < 1e-4, $"{family}: base logits vs transformers");

        // generate: the merged model continues a chat prompt exactly as the base with the adapter does.
        string[] generate = ["generate", "--device", "cpu", "--dtype", "fp32", "--chat", "--prompt", "Can you describe the ClearFlow filter?",
            "--max-new-tokens", "12", "--json"];
        var viaAdapter = CliRunner.Run([.. generate, "--model", r.Dir, "--adapter", adapter]);
        var viaMerged = CliRunner.Run([.. generate, "--model", tmp["merged"]]);
        Assert.True(viaAdapter.Code == 0 && viaMerged.Code == 0, viaAdapter.Stderr + viaMerged.Stderr);
        Assert.Contains("\"output_ids\": [", viaAdapter.Stdout);
        Assert.Equal(viaAdapter.Stdout, viaMerged.Stdout);
    }

    [Theory]
    [InlineData("qwen2", "use_sliding_window", "true", "llama.cpp's qwen2 architecture has no sliding-window attention")]
    [InlineData("gemma2", "final_logit_softcapping", "null", "llama.cpp's gemma2 architecture always soft-caps")]
    [InlineData("gemma", "attention_bias", "true", "llama.cpp's gemma architecture has no q_proj bias")]
    public void Gguf_export_refuses_what_the_llama_cpp_architecture_cannot_compute_by_name(string family, string key, string value, string expected)
    {
        // A config the family loads but llama.cpp's graph has no member for: refused before any file is written.
        using var tmp = Paths.Temp();
        string dir = tmp["model"];
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(FamilyReference.DirOf(family))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config[key] = System.Text.Json.Nodes.JsonNode.Parse(value);
        if (key == "use_sliding_window")
        {
            (config["sliding_window"], config["max_window_layers"]) = (8, 2);
            config.Remove("layer_types");
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var (code, _, stderr) = CliRunner.Run("export", "--model", dir, "--format", "gguf", "--type", "f16", "--out", tmp["m.gguf"]);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.False(File.Exists(tmp["m.gguf"]));
    }
}
