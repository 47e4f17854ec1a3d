using System.Text.Json;

namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public class GenerateTests
{
    [Fact]
    public void Json_output_is_the_transformers_greedy_continuation()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", Paths.TinyModel, "--prompt", "The whale",
            "--max-new-tokens", "24", "--json", "--device", "cpu");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("{\"input_ids\": [1, 450, 377, 744], \"output_ids\": [29892, 322, ", stdout);
        using var doc = JsonDocument.Parse(stdout);
        var output = doc.RootElement.GetProperty("output_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(new[] { 29892, 322, 278, 916, 674, 451, 367, 3595, 29936, 541, 29892, 408, 278, 377, 744, 338, 29892, 263, 1556, 13, 348, 535, 346, 7943 }, output);
        Assert.Equal(", and the other will not be seen; but, as the whale is, a most\nunconcealed", doc.RootElement.GetProperty("text").GetString());
    }

    [Fact]
    public void Plain_output_is_prompt_and_continuation()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", Paths.TinyModel, "--prompt", "The whale", "--max-new-tokens", "3");
        Assert.True(code == 0, stderr);
        Assert.Equal("The whale, and the", stdout.TrimEnd('\n'));
    }

    [Fact, Trait("tier", "e2e")]
    public void Chat_wraps_the_prompt_in_the_template_with_the_generation_prompt()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", Paths.TinyModel, "--prompt", "Hi", "--chat",
            "--max-new-tokens", "4", "--json", "--device", "cpu");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var input = doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        // The model ships no template and has a SentencePiece tokenizer: llama2-chat, "<s>[INST] Hi [/INST]".
        Assert.Equal(new[] { 1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962 }, input);
        var raw = CliRunner.Run("generate", "--model", Paths.TinyModel, "--prompt", "Hi", "--max-new-tokens", "1", "--json", "--device", "cpu");
        Assert.StartsWith("{\"input_ids\": [1, 6324], ", raw.Stdout);
    }

    [Fact]
    public void Seeded_sampling_is_reproducible()
    {
        string[] args = ["generate", "--model", Paths.TinyModel, "--prompt", "Call me", "--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3", "--json"];
        var first = CliRunner.Run(args);
        Assert.True(first.Code == 0, first.Stderr);
        Assert.Equal(first.Stdout, CliRunner.Run(args).Stdout);
    }

    [Fact]
    public void Bad_inputs_are_one_line_errors()
    {
        var missing = CliRunner.Run("generate", "--model", "/nonexistent/model", "--prompt", "x");
        Assert.Equal(1, missing.Code);
        Assert.Equal("error: model directory '/nonexistent/model' does not exist", missing.Stderr.TrimEnd());

        var badTopP = CliRunner.Run("generate", "--model", Paths.TinyModel, "--prompt", "x", "--top-p", "0");
        Assert.Equal(1, badTopP.Code);
        Assert.Contains("top-p must be in (0, 1]", badTopP.Stderr);

        var badDevice = CliRunner.Run("generate", "--model", Paths.TinyModel, "--prompt", "x", "--device", "tpu");
        Assert.Equal(1, badDevice.Code);
        Assert.Contains("tpu", badDevice.Stderr);
    }
}
