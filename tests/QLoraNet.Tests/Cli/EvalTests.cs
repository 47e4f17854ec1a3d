using System.Text.Json;
using QLoraNet.Models;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public class EvalTests
{
    static readonly string ReferenceJson = Path.Combine(Paths.TinyModel, "reference.json");

    static JsonElement EvalJson(params string[] extra)
    {
        var (code, stdout, stderr) = CliRunner.Run(["eval", "--model", Paths.TinyModel, "--device", "cpu", "--json", .. extra]);
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    [Fact]
    public void Loss_on_the_reference_ids_equals_transformers()
    {
        var r = EvalJson("--token-ids-json", ReferenceJson);
        Assert.Equal(4.50247, r.GetProperty("mean_loss").GetDouble(), 1e-3);         // reference.json heldout_mean_loss_fp32
        Assert.Equal(511, r.GetProperty("tokens").GetInt64());
        Assert.Equal(Math.Exp(r.GetProperty("mean_loss").GetDouble()), r.GetProperty("perplexity").GetDouble(), 1e-9);
        Assert.Equal("none", r.GetProperty("quantization").GetString());
    }

    [Fact]
    public void Nf4_loss_is_close_to_but_not_equal_to_dense()
    {
        var r = EvalJson("--token-ids-json", ReferenceJson, "--quantization", "nf4-dq");
        Assert.Equal("nf4-dq", r.GetProperty("quantization").GetString());
        double loss = r.GetProperty("mean_loss").GetDouble();
        Assert.NotEqual(4.50247, loss, 1e-4);
        Assert.InRange(loss, 4.50247 - 0.05, 4.50247 + 0.1);
    }

    [Fact]
    public void Windows_score_each_token_once()
    {
        using var model = Models.TinyLlamaFixture.Load();
        var first300 = QLoraNet.Cli.EvalCommand.ReadIds(ReferenceJson).Take(300).ToList();

        var one = WindowedLoss.Compute(model, first300, 300, 300);
        Assert.Equal(299, one.Tokens);
        // Non-overlapping windows of 100: each window's first token is context only.
        Assert.Equal(297, WindowedLoss.Compute(model, first300, 100, 100).Tokens);
        // Stride 50: windows overlap, every token after BOS is scored once, with at least 50 tokens of context.
        var strided = WindowedLoss.Compute(model, first300, 100, 50);
        Assert.Equal(299, strided.Tokens);
        // One full window equals the mean cross-entropy of the model's causal LM loss.
        using var input = tensor(first300.ToArray()).unsqueeze(0);
        using var logits = model.forward(input);
        using var mean = CausalLmLoss.Compute(logits, input);
        Assert.Equal(mean.item<float>(), one.Mean, 1e-5);
    }

    [Fact]
    public void Text_file_is_tokenized_with_bos()
    {
        using var dir = Paths.Temp();
        File.WriteAllText(dir["t.txt"], "Call me Ishmael. Some years ago, never mind how long precisely, I thought I would sail about a little.");
        File.WriteAllText(dir["ids.json"], "[" + string.Join(", ", TextTokenizers.Load(Paths.TinyModel)
            .Encode(File.ReadAllText(dir["t.txt"]))) + "]");
        var fromText = EvalJson("--text-file", dir["t.txt"]);
        var fromIds = EvalJson("--token-ids-json", dir["ids.json"]);
        Assert.Equal(fromIds.GetProperty("mean_loss").GetDouble(), fromText.GetProperty("mean_loss").GetDouble());
        Assert.StartsWith("[1, ", File.ReadAllText(dir["ids.json"]));
    }

    [Fact]
    public void Bad_inputs_are_one_line_errors()
    {
        var missing = CliRunner.Run("eval", "--model", Paths.TinyModel, "--text-file", "/nonexistent/heldout.txt");
        Assert.Equal(1, missing.Code);
        Assert.Equal("error: --text-file '/nonexistent/heldout.txt' does not exist", missing.Stderr.TrimEnd());

        var neither = CliRunner.Run("eval", "--model", Paths.TinyModel);
        Assert.Equal(1, neither.Code);
        Assert.Contains("exactly one of --text-file, --token-ids-json and --data", neither.Stderr);

        using var dir = Paths.Temp();
        File.WriteAllText(dir["ids.json"], "{\"ids\": [1, 2]}");
        var badIds = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", dir["ids.json"]);
        Assert.Equal(1, badIds.Code);
        Assert.Contains("heldout_text_first_512_ids", badIds.Stderr);

        var badStride = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", ReferenceJson, "--max-len", "64", "--stride", "128");
        Assert.Equal(1, badStride.Code);
        Assert.Contains("--stride 128", badStride.Stderr);
    }
}
