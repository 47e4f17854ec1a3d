using System.Text.Json;

namespace QLoraNet.Tests.Cli;

/// <summary>
/// `inspect` per family on the hub's config.json of one real size each (configs/models/): the parameter count is
/// the published size, a tied head is counted once, and the QLoRA estimate uses the family's real shapes (LoRA on
/// q/k/v/o with GQA widths and Gemma's head_dim 256, not hidden / heads).
/// </summary>
[Trait("tier", "unit")]
public class FamilyInspectTests
{
    static JsonElement Inspect(string name)
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", Path.Combine(Paths.RepoRoot, "configs", "models", name), "--json");
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    /// <param name="loraParameters">r = 16 on q, k, v, o of every layer: 16 x sum of (in + out), by hand from the shapes.</param>
    /// <param name="embeddingsAndHead">bf16 bytes of the embedding, plus the head unless tied.</param>
    [Theory]
    [InlineData("llama3-8b", 8_030_261_248L, false, 32L * 16 * (2 * 8192 + 2 * 5120), 2L * 128_256 * 4096 * 2)]
    [InlineData("llama3.2-1b", 1_235_814_400L, true, 16L * 16 * (2 * 4096 + 2 * 2560), 128_256L * 2048 * 2)]
    [InlineData("mistral-7b", 7_241_732_096L, false, 32L * 16 * (2 * 8192 + 2 * 5120), 2L * 32_000 * 4096 * 2)]
    [InlineData("qwen2.5-7b", 7_615_616_512L, false, 28L * 16 * (2 * 7168 + 2 * 4096), 2L * 152_064 * 3584 * 2)]
    [InlineData("gemma-7b", 8_537_680_896L, true, 28L * 16 * (4 * (3072 + 4096)), 256_000L * 3072 * 2)]
    [InlineData("gemma2-9b", 9_241_705_984L, true, 42L * 16 * (2 * (3584 + 4096) + 2 * (3584 + 2048)), 256_000L * 3584 * 2)]
    public void Counts_and_estimates_follow_the_family_record(string name, long total, bool tied, long loraParameters, long embeddingsAndHead)
    {
        var root = Inspect(name);
        var p = root.GetProperty("parameters");
        Assert.Equal(total, p.GetProperty("total").GetInt64());
        Assert.Equal(tied, p.GetProperty("head").GetInt64() == 0);
        var bf16 = root.GetProperty("size_bytes").EnumerateArray().Single(r => r.GetProperty("format").GetString() == "bf16");
        Assert.Equal(total * 2, bf16.GetProperty("total").GetInt64());
        var dq = root.GetProperty("size_bytes").EnumerateArray().Single(r => r.GetProperty("format").GetString() == "nf4-dq");
        Assert.Equal(embeddingsAndHead, dq.GetProperty("embeddings_and_head").GetInt64());
        Assert.Equal(loraParameters, root.GetProperty("training_estimate_bytes").GetProperty("lora_parameters").GetInt64());
    }

    [Fact]
    public void The_layer_recompute_term_uses_head_dim_and_kv_widths_and_capped_scores()
    {
        long Recompute(string name) => Inspect(name).GetProperty("training_estimate_bytes").GetProperty("layer_recompute").GetInt64();
        const long bt = 4 * 512, scores = 4L * 512 * 512 * 2;   // batch 4 x seq 512; one bf16 (T, T) score plane per batch row
        // Llama-2-7B, multi-head: 10 H + 4 I, as before the families (0.482 GB in docs/QUANTIZATION.md).
        Assert.Equal(bt * (10 * 4096 + 4 * 11008) * 2 + 2 * 32 * scores, Recompute("llama2-7b"));
        // Gemma-7B: q/k/v are 16 x 256 = 4096 wide against hidden 3072.
        Assert.Equal(bt * (4 * 3072 + 3 * 4096 + 3 * 4096 + 4 * 24576) * 2 + 2 * 16 * scores, Recompute("gemma-7b"));
        // Gemma-2-9B: kv 8 x 256 = 2048, soft-capped scores (4 score-sized tensors).
        Assert.Equal(bt * (4 * 3584 + 3 * 4096 + 3 * 2048 + 4 * 14336) * 2 + 4 * 16 * scores, Recompute("gemma2-9b"));
        // and its final soft-cap keeps one more fp32 copy of the logits
        Assert.Equal(4L * bt * 256_000 * 4, Inspect("gemma2-9b").GetProperty("training_estimate_bytes").GetProperty("logits").GetInt64());
    }

    [Fact]
    public void Text_output_names_the_family_and_head_dim()
    {
        var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", Path.Combine(Paths.RepoRoot, "configs", "models", "gemma-7b"));
        Assert.True(code == 0, stderr);
        Assert.Contains("heads 16 (kv 16, head_dim 256)", stdout);
        Assert.Contains("family gemma", stdout);
        Assert.Contains("(tied to the embedding)", stdout);
        Assert.Contains("total                    8,537,680,896", stdout);
    }

    [Fact]
    public void Fixture_counts_equal_their_checkpoint_tensors()
    {
        // From config.json alone, the count of every fixture equals what its safetensors hold (a tied head stored
        // nowhere, Gemma's q/o widths from head_dim 48, Qwen2's biases, Gemma 2's four norms).
        foreach (var family in new[] { "llama3", "mistral", "qwen2", "gemma", "gemma2" })
        {
            string dir = Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", family);
            var (code, stdout, stderr) = CliRunner.Run("inspect", "--model", dir, "--json");
            Assert.True(code == 0, $"{family}: {stderr}");
            using var doc = JsonDocument.Parse(stdout);
            using var ckpt = QLoraNet.Formats.CheckpointReader.Open(dir);
            long stored = ckpt.Names.Sum(n => ckpt.Info(n).Shape.Aggregate(1L, (a, b) => a * b));
            Assert.Equal(stored, doc.RootElement.GetProperty("parameters").GetProperty("total").GetInt64());
        }
    }
}
