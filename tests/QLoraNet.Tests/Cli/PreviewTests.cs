namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public class PreviewTests
{
    [Fact]
    public void Preview_prints_rows_with_trained_tokens_marked_and_the_pipeline_figures_without_loading_weights()
    {
        using var tmp = Paths.Temp();
        // A model directory with no weights at all: the preview must not need them.
        string model = tmp["model"];
        Directory.CreateDirectory(model);
        foreach (var f in new[] { "config.json", "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(Paths.TinyModel, f), Path.Combine(model, f));
        var (code, stdout, stderr) = CliRunner.Run("train", Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"), $"model.path={model}",
            $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            $"data.validation={Path.Combine(Paths.RepoRoot, "datasets", "sales", "validation.jsonl")}", $"output.dir={tmp["run"]}", "--preview", "2");
        Assert.True(code == 0, stderr);
        Assert.Contains("--- row 0:", stdout);
        Assert.Contains("--- row 1:", stdout);
        Assert.DoesNotContain("--- row 2:", stdout);
        Assert.Contains("[INST] <<SYS>>", stdout);          // the prompt, masked: plain
        Assert.Contains("{{</s>}}", stdout);                 // the answer's EOS is trained
        Assert.Contains("{{ ", stdout);
        Assert.Contains("examples: 547 train, 154 validation; truncated 0, dropped 0", stdout);
        Assert.Contains("rows: 341 train after packing", stdout);
        Assert.Contains("padding", stdout);
        Assert.False(Directory.Exists(tmp["run"]), "a preview writes nothing");
    }

    [Fact]
    public void Preview_counts_truncation_and_drops()
    {
        var (code, stdout, stderr) = CliRunner.Run("train", Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"), $"model.path={Paths.TinyModel}",
            $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}", "data.validation=null", "data.max_seq_len=64",
            "data.packing=false", "--preview", "0");
        Assert.True(code == 0, stderr);
        Assert.DoesNotContain("--- row", stdout);
        Assert.Matches(@"truncated \d+, dropped [1-9]\d*", stdout);
    }
}
