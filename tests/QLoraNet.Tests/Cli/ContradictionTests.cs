using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Tests.Peft;
using QLoraNet.Training.Config;

namespace QLoraNet.Tests.Cli;

/// <summary>
/// Inputs that contradict themselves or the model, accepted with exit 0 before issue 11: each is now refused (or,
/// where the user may mean it, allowed by a flag that says so), with one line naming both sides.
/// </summary>
[Trait("tier", "e2e")]
public class ContradictionTests
{
    /// <summary>A copy of the tiny model, its config.json edited, optionally without some files.</summary>
    static string TinyCopy(TempDir tmp, Action<JsonObject>? edit = null, params string[] without)
    {
        string dir = tmp["model"];
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Paths.TinyModel).Where(f => !without.Contains(Path.GetFileName(f))))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        if (edit is not null)
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            edit(config);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        }
        return dir;
    }

    [Fact]
    public void Model_type_and_architectures_that_name_different_models_are_refused_naming_both()
    {
        using var tmp = Paths.Temp();
        string model = TinyCopy(tmp, c => c["model_type"] = "gpt2");
        var e = Assert.Throws<InvalidDataException>(() => ModelFamilies.Load(model));
        Assert.Equal($"{Path.Combine(model, "config.json")}: model_type 'gpt2' contradicts architectures [LlamaForCausalLM] (the llama family has model_type 'llama'); fix whichever is wrong", e.Message);

        // train refuses it at its config check, export and generate before any weight is read.
        var c = Assert.Throws<ConfigException>(() => TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
            [$"model.path={model}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}", "data.validation=null"]));
        Assert.Contains("model_type 'gpt2' contradicts architectures", c.Message);
        foreach (var args in new[] { new[] { "export", "--model", model, "--out", tmp["m.gguf"] },
                                     new[] { "generate", "--model", model, "--prompt", "hi", "--device", "cpu" } })
        {
            var (code, _, err) = CliRunner.Run(args);
            Assert.Equal(1, code);
            Assert.Contains("model_type 'gpt2' contradicts architectures [LlamaForCausalLM]", err);
            Assert.Single(err.Trim().Split('\n'));
        }
        Assert.False(File.Exists(tmp["m.gguf"]));
    }

    [Fact]
    public void Merge_of_a_model_without_a_tokenizer_is_refused_unless_no_tokenizer_is_given_and_then_says_so()
    {
        using var tmp = Paths.Temp();
        string model = TinyCopy(tmp, null, "tokenizer.model");
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        var (code, _, err) = CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--out", tmp["merged"]);
        Assert.Equal(1, code);
        Assert.Equal($"error: {model}: has no tokenizer (tokenizer.model or tokenizer.json), so the merged checkpoint would not load on its own; "
            + "copy the base model's tokenizer there, or pass --no-tokenizer to write the weights without one", err.Trim());
        Assert.False(Directory.Exists(tmp["merged"]));

        var (code2, stdout, err2) = CliRunner.Run("merge", "--model", model, "--adapter", adapter, "--out", tmp["merged"], "--no-tokenizer");
        Assert.True(code2 == 0, err2);
        Assert.Contains($"note: {tmp["merged"]} has no tokenizer (--no-tokenizer)", stdout);
        Assert.True(File.Exists(Path.Combine(tmp["merged"], "model.safetensors")) || Directory.GetFiles(tmp["merged"], "*.safetensors").Length > 0);
    }

    [Fact]
    public void Quantize_merge_and_export_all_refuse_a_missing_parent_folder_with_the_same_line()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"]);
        string parent = tmp["missing"];
        foreach (var (args, output) in new[]
                 {
                     (new[] { "quantize", "--model", Paths.TinyModel, "--quantization", "nf4-dq" }, Path.Combine(parent, "q")),
                     (new[] { "merge", "--model", Paths.TinyModel, "--adapter", adapter }, Path.Combine(parent, "m")),
                     (new[] { "export", "--model", Paths.TinyModel }, Path.Combine(parent, "m.gguf")),
                 })
        {
            var (code, _, err) = CliRunner.Run([.. args, "--out", output]);
            Assert.Equal(1, code);
            Assert.Equal($"error: --out '{output}': parent directory '{parent}' does not exist; create it first", err.Trim());
            Assert.False(Directory.Exists(parent), $"{args[0]} created {parent}");
        }
    }

    [Fact]
    public void Generate_stops_at_the_context_length_with_a_note_and_refuses_a_prompt_longer_than_it()
    {
        using var tmp = Paths.Temp();
        string model = TinyCopy(tmp, c => c["max_position_embeddings"] = 12);
        var (code, stdout, err) = CliRunner.Run("generate", "--model", model, "--prompt", "The whale", "--max-new-tokens", "40",
            "--device", "cpu", "--dtype", "fp32", "--json");
        Assert.True(code == 0, err);
        var output = JsonNode.Parse(stdout)!;
        int prompt = output["input_ids"]!.AsArray().Count, generated = output["output_ids"]!.AsArray().Count;
        Assert.True(prompt + generated <= 12, $"{prompt} + {generated} tokens in a 12-token context");
        if (generated == 12 - prompt)   // no end-of-sequence token came first: the context ended it
            Assert.Equal($"note: stopped after {12 - prompt} new tokens at the model's context length 12 (max_position_embeddings); --max-new-tokens 40 was not reached", err.Trim());

        (code, _, err) = CliRunner.Run("generate", "--model", model, "--prompt", string.Join(" ", Enumerable.Repeat("whale", 20)), "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Matches(@"^error: --prompt: \d+ tokens is more than the model's context length 12 \(max_position_embeddings in its config.json\); shorten the prompt$", err.Trim());
    }

    [Fact]
    public void A_max_seq_len_past_the_models_context_length_is_refused_at_config_check_naming_both()
    {
        var e = Assert.Throws<ConfigException>(() => TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
            [$"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}", "data.validation=null",
             "data.max_seq_len=2048"]));
        Assert.Contains("'data.max_seq_len' 2048 is more than the model's context length 1024 (max_position_embeddings in ", e.Message);
        Assert.StartsWith("override 'data.max_seq_len=2048'", e.Message);   // where the value came from
    }
}
