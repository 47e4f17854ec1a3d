using System.Text.Json;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Tests.Models;
using QLoraNet.Tests.Peft;

namespace QLoraNet.Tests.Cli;

/// <summary>The llm-int8, hqq and ternary spellings through the verbs: quantize, eval, generate, merge, inspect, info.</summary>
[Trait("tier", "e2e")]
public class NewFormatCliTests
{
    static string Ids => Path.Combine(Paths.TinyModel, "reference.json");

    static JsonElement Json(string stdout) => JsonDocument.Parse(stdout).RootElement;

    [Theory]
    [InlineData("llm-int8")]
    [InlineData("ternary")]
    public void A_quantize_output_evaluates_like_quantize_on_load(string spelling)
    {
        using var dir = Paths.Temp();
        var (code, stdout, stderr) = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--quantization", spelling, "--out", dir["q"]);
        Assert.True(code == 0, stderr);
        Assert.StartsWith($"wrote {dir["q"]}: 28 linears in {spelling}, ", stdout);
        var stored = CliRunner.Run("eval", "--model", dir["q"], "--token-ids-json", Ids, "--device", "cpu", "--json");
        var onLoad = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", Ids, "--device", "cpu", "--json", "--quantization", spelling);
        Assert.True(stored.Code == 0, stored.Stderr);
        Assert.True(onLoad.Code == 0, onLoad.Stderr);
        Assert.Equal(Json(onLoad.Stdout).GetProperty("mean_loss").GetDouble(), Json(stored.Stdout).GetProperty("mean_loss").GetDouble());
        Assert.Equal(spelling, Json(stored.Stdout).GetProperty("quantization").GetString());
        var outliers = Json(onLoad.Stdout).GetProperty("outlier_columns");
        if (spelling == "llm-int8")
        {
            Assert.Equal(28, outliers.EnumerateObject().Count());
            Assert.All(outliers.EnumerateObject(), o => Assert.InRange(o.Value.GetDouble(), 0, 1));
            Assert.Contains("model.layers.0.mlp.down_proj", outliers.EnumerateObject().Select(o => o.Name));
        }
        else Assert.Equal(JsonValueKind.Null, outliers.ValueKind);
    }

    [Fact]
    public void Eval_prints_the_outlier_share_per_layer_and_a_low_threshold_finds_more()
    {
        var six = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", Ids, "--device", "cpu", "--quantization", "llm-int8");
        var one = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", Ids, "--device", "cpu", "--json", "--quantization", "llm-int8-t1");
        Assert.True(six.Code == 0, six.Stderr);
        Assert.Contains("llm-int8 outlier columns", six.Stdout);
        Assert.Contains("  model.layers.3.mlp.down_proj", six.Stdout);
        var low = Json(one.Stdout).GetProperty("outlier_columns").EnumerateObject().Average(o => o.Value.GetDouble());
        Assert.True(low > 0.01, $"threshold 1 flags {low:P2} of the columns");
    }

    [Fact]
    public void Hqq_quantize_writes_and_generate_reads_it()
    {
        using var dir = Paths.Temp();
        string src = SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        var (code, stdout, stderr) = CliRunner.Run("quantize", "--model", src, "--quantization", "hqq3-g8", "--out", dir["q"]);
        Assert.True(code == 0, stderr);
        Assert.Contains("7 linears in hqq3-g8", stdout);
        Assert.Equal(BaseFormat.Parse("hqq3-g8"), QuantizedCheckpoint.StoredFormat(dir["q"]));

        var gen = CliRunner.Run("generate", "--model", Paths.TinyModel, "--quantization", "ternary", "--prompt", "The whale", "--max-new-tokens", "3", "--device", "cpu", "--json");
        Assert.True(gen.Code == 0, gen.Stderr);
        Assert.Equal(3, Json(gen.Stdout).GetProperty("output_ids").GetArrayLength());
    }

    [Fact]
    public void Merge_takes_the_new_formats_as_base_and_as_output()
    {
        using var tmp = Paths.Temp();
        string adapter = MergeTestAdapter.Create(tmp["adapter"], baseFormat: BaseFormat.Parse("llm-int8"));
        var (code, stdout, stderr) = CliRunner.Run("merge", "--model", Paths.TinyModel, "--adapter", adapter, "--out", tmp["m"],
            "--base", "llm-int8", "--quantization", "ternary");
        Assert.True(code == 0, stderr);
        Assert.Contains("(ternary + bfloat16)", stdout);
        Assert.Equal(BaseFormat.Parse("ternary"), QuantizedCheckpoint.StoredFormat(tmp["m"]));
        var eval = CliRunner.Run("eval", "--model", tmp["m"], "--token-ids-json", Ids, "--device", "cpu", "--json");
        Assert.True(eval.Code == 0, eval.Stderr);

        var bad = CliRunner.Run("merge", "--model", Paths.TinyModel, "--adapter", adapter, "--out", tmp["n"], "--quantization", "hqq5");
        Assert.Equal(1, bad.Code);
        Assert.Contains("hqq5: 5 bits are not supported", bad.Stderr);
    }

    [Fact]
    public void Inspect_sizes_the_new_formats_exactly()
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", Path.Combine(Paths.RepoRoot, "configs", "models", "llama2-7b"), "--json");
        Assert.True(code == 0, stderr);
        var rows = Json(stdout).GetProperty("size_bytes").EnumerateArray().ToDictionary(r => r.GetProperty("format").GetString()!, r => r.GetProperty("linears").GetInt64());
        // 32 layers of 4 x 4096^2 + 3 x 4096 x 11008 = 6,476,005,376 weights; int8 codes + fp32 per row (4096 x 4 + 11008 x 2 + 4096 rows).
        const long n = 6_476_005_376;
        Assert.Equal(n + 4L * 32 * (4 * 4096 + 2 * 11008 + 4096), rows["llm-int8"]);
        Assert.Equal(n / 2 + 4 * (n / 64), rows["hqq4"]);
        Assert.Equal(n / 4 + 4 * (n / 64), rows["hqq2"]);
        Assert.Equal(n / 4 + 2 * 7 * 32, rows["ternary"]);
        Assert.True(rows["hqq3"] > rows["hqq2"] && rows["hqq3"] < rows["hqq4"]);
    }

    [Theory]
    [InlineData("llm-int8-t0", "--quantization: base format 'llm-int8-t0': threshold must be a number above 0; got 0")]
    [InlineData("hqq4-g12", "--quantization: base format 'hqq4-g12': group size must be a multiple of 8 in [8, 8192]; got 12")]
    [InlineData("hqq6", "--quantization: base format 'hqq6': hqq6: 6 bits are not supported; hqq takes 2, 3, 4 or 8 bits")]
    public void Bad_spellings_are_one_line_errors(string spelling, string expected)
    {
        var (code, _, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", Ids, "--quantization", spelling);
        Assert.Equal(1, code);
        Assert.Equal($"error: {expected}", stderr.TrimEnd());
    }

    [Fact]
    public void Info_reports_the_int8_and_ternary_paths()
    {
        var (code, stdout, stderr) = CliRunner.Run("info");
        Assert.True(code == 0, stderr);
        Assert.Contains("llm-int8 int8 matmul on cpu: fp32-exact", stdout);
        Assert.Contains("ternary matmul on cpu: cpu-simd", stdout);
    }
}
