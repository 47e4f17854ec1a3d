using System.Text.Json;
using QLoraNet.Formats;

namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public class InspectTests
{
    static JsonElement InspectJson(string model)
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", model, "--json");
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    static JsonElement Row(JsonElement root, string format) =>
        root.GetProperty("size_bytes").EnumerateArray().Single(r => r.GetProperty("format").GetString() == format);

    [Fact]
    public void Llama2_7b_sizes_are_the_known_figures()
    {
        var root = InspectJson(Path.Combine(Paths.RepoRoot, "configs", "models", "llama2-7b"));
        var p = root.GetProperty("parameters");
        Assert.Equal(6_738_415_616, p.GetProperty("total").GetInt64());       // Llama-2-7B: 6.74B parameters
        Assert.Equal(32_000L * 4096, p.GetProperty("head").GetInt64());
        Assert.Equal(202_375_168, p.GetProperty("linears_per_layer").GetInt64()); // 4 x 4096^2 + 3 x 4096 x 11008

        Assert.Equal(6_738_415_616L * 4, Row(root, "fp32").GetProperty("total").GetInt64()); // 26.95 GB
        Assert.Equal(6_738_415_616L * 2, Row(root, "bf16").GetProperty("total").GetInt64());

        // NF4 + DQ: 6.476e9 linear weights x (4 + 8/64 + 32/(64*256)) bits + bf16 embedding and head (2 x 262 MB).
        var dq = Row(root, "nf4-dq");
        long linears = 6_476_005_376;
        Assert.Equal(linears / 2 + linears / 64 + 4 * (linears / 64 / 256) + 4 * 32 * 7, dq.GetProperty("linears").GetInt64());
        Assert.Equal(2L * 32_000 * 4096 * 2, dq.GetProperty("embeddings_and_head").GetInt64());
        double total = dq.GetProperty("total").GetInt64() / 1e9;
        Assert.InRange(total, 3.5, 4.0);
        Assert.InRange(Row(root, "nf4").GetProperty("total").GetInt64() / 1e9, total, 4.2); // plain NF4 is larger

        var est = root.GetProperty("training_estimate_bytes");
        Assert.Equal(32L * 4 * 16 * (4096 + 4096), est.GetProperty("lora_parameters").GetInt64()); // r=16 on q,k,v,o
        Assert.Equal(32L * 4 * 512 * 4096 * 2, est.GetProperty("boundaries").GetInt64());
        Assert.Equal(3L * 4 * 512 * 32000 * 4, est.GetProperty("logits").GetInt64());
    }

    [Fact]
    public void Tiny_model_counts_equal_the_checkpoint_tensors()
    {
        var root = InspectJson(Paths.TinyModel);
        using var ckpt = CheckpointReader.Open(Paths.TinyModel);
        long stored = ckpt.Names.Sum(n => ckpt.Info(n).Shape.Aggregate(1L, (a, b) => a * b));
        Assert.Equal(stored, root.GetProperty("parameters").GetProperty("total").GetInt64());
        Assert.Equal(0, root.GetProperty("parameters").GetProperty("head").GetInt64()); // tied
        Assert.Equal(stored * 2, Row(root, "bf16").GetProperty("total").GetInt64());     // the checkpoint is bf16
    }

    [Fact]
    public void Text_output_has_the_13b_total_and_the_estimate()
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", Path.Combine(Paths.RepoRoot, "configs", "models", "llama2-13b"), "--seq", "256", "--batch", "2");
        Assert.True(code == 0, stderr);
        Assert.Contains("total                   13,015,864,320", stdout); // Llama-2-13B
        Assert.Contains("seq 256 x batch 2", stdout);
    }

    [Fact]
    public void Missing_config_is_one_line_error()
    {
        using var dir = Paths.Temp();
        var (code, _, stderr) = CliRunner.Run("inspect", "--model", dir.Path);
        Assert.Equal(1, code);
        Assert.Equal($"error: {Path.Combine(dir.Path, "config.json")}: not found (a Hugging Face model directory needs a config.json)", stderr.TrimEnd());

        var missing = CliRunner.Run("inspect", "--model", "/nonexistent/dir");
        Assert.Equal(1, missing.Code);
        Assert.Contains("/nonexistent/dir", missing.Stderr);
    }
}
