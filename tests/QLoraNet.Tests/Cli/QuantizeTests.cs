using System.Text.Json;
using QLoraNet.Formats;

namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public class QuantizeTests
{
    [Fact]
    public void Quantized_directory_evaluates_like_quantize_on_load()
    {
        using var dir = Paths.Temp();
        string outDir = dir["tiny-fp4"];
        var (code, stdout, stderr) = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--quantization", "fp4-dq", "--out", outDir);
        Assert.True(code == 0, stderr);
        Assert.StartsWith($"wrote {outDir}: 28 linears in fp4-dq, 10 tensors copied, 1 safetensors file(s)", stdout);
        using (var ckpt = CheckpointReader.Open(outDir))
            Assert.True(ckpt.Contains("model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__fp4"));
        Assert.Empty(Directory.GetDirectories(dir.Path, "*.tmp-*"));

        string ids = Path.Combine(Paths.TinyModel, "reference.json");
        var stored = CliRunner.Run("eval", "--model", outDir, "--token-ids-json", ids, "--device", "cpu", "--json");
        var onLoad = CliRunner.Run("eval", "--model", Paths.TinyModel, "--token-ids-json", ids, "--device", "cpu", "--json", "--quantization", "fp4-dq");
        Assert.True(stored.Code == 0, stored.Stderr);
        Assert.True(onLoad.Code == 0, onLoad.Stderr);
        double Loss(string json) => JsonDocument.Parse(json).RootElement.GetProperty("mean_loss").GetDouble();
        Assert.Equal(Loss(onLoad.Stdout), Loss(stored.Stdout));
        Assert.Contains("\"quantization\":\"fp4-dq\"", stored.Stdout);

        var other = CliRunner.Run("eval", "--model", outDir, "--token-ids-json", ids, "--quantization", "nf4");
        Assert.Equal(1, other.Code);
        Assert.Contains($"--quantization nf4: {outDir} is already quantized as fp4-dq", other.Stderr);
    }

    [Fact]
    public void Existing_output_is_refused_unless_overwrite()
    {
        using var dir = Paths.Temp();
        string outDir = Directory.CreateDirectory(dir["out"]).FullName;
        File.WriteAllText(Path.Combine(outDir, "keep.txt"), "x");
        var refused = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", outDir);
        Assert.Equal(1, refused.Code);
        Assert.Equal($"error: --out '{outDir}' exists and is not empty; pass --overwrite to replace it", refused.Stderr.TrimEnd());
        Assert.True(File.Exists(Path.Combine(outDir, "keep.txt")));

        var replaced = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", outDir, "--overwrite", "--quantization", "nf4-b128");
        Assert.True(replaced.Code == 0, replaced.Stderr);
        Assert.False(File.Exists(Path.Combine(outDir, "keep.txt")));
        Assert.Contains("in nf4-b128,", replaced.Stdout);
        Assert.Equal("nf4-b128", QLoraNet.Models.QuantizedCheckpoint.StoredFormat(outDir)!.ToString());
    }

    [Fact]
    public void The_older_flags_spell_the_same_format()
    {
        using var dir = Paths.Temp();
        var older = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", dir["o"], "--method", "fp4", "--double-quant", "--blocksize", "128");
        Assert.True(older.Code == 0, older.Stderr);
        Assert.Contains("in fp4-b128-dq,", older.Stdout);
        var both = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", dir["p"], "--method", "fp4", "--quantization", "fp4");
        Assert.Equal(1, both.Code);
        Assert.Contains("not both", both.Stderr);
    }

    [Fact]
    public void Bad_options_are_one_line_errors()
    {
        using var dir = Paths.Temp();
        var block = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", dir["o"], "--quantization", "nf4-b48");
        Assert.Equal(1, block.Code);
        Assert.Contains("--quantization: base format 'nf4-b48': blocksize must be a power of two in [16, 4096]; got 48", block.Stderr);
        var olderBlock = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", dir["o"], "--blocksize", "48");
        Assert.Contains("blocksize must be a power of two in [16, 4096]; got 48", olderBlock.Stderr);

        var method = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", dir["o"], "--quantization", "int8");
        Assert.Equal(1, method.Code);
        Assert.Contains("--quantization int8: no checkpoint layout stores it", method.Stderr);

        var self = CliRunner.Run("quantize", "--model", Paths.TinyModel, "--out", Paths.TinyModel, "--overwrite");
        Assert.Equal(1, self.Code);
        Assert.Contains("is the model directory itself", self.Stderr);
        Assert.True(File.Exists(Path.Combine(Paths.TinyModel, "model.safetensors.index.json")));
    }
}
