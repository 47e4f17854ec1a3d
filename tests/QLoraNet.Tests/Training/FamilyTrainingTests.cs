using QLoraNet.Tests.Models.Families;
using QLoraNet.Training.Config;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>
/// `train` on each family fixture through its CI config (configs/tests/&lt;family&gt;-tiny.yaml): NF4-DQ base, LoRA on
/// every linear, 8 steps over 8 rows of text the fixture never saw: the loss falls. Paths made absolute. Every
/// family: SentencePiece tokenizer.model (mistral, gemma, gemma2) and byte-level BPE tokenizer.json (llama3, qwen2).
/// </summary>
[Trait("tier", "e2e")]
public class FamilyTrainingTests
{
    static string R(string relative) => Path.Combine(Paths.RepoRoot, relative);

    [Theory]
    [MemberData(nameof(FamilyReference.All), MemberType = typeof(FamilyReference))]
    public void The_tiny_config_trains_the_fixture_and_the_loss_falls(string family)
    {
        using var tmp = Paths.Temp();
        var (code, stdout, stderr) = CliRunner.Run("train", R($"configs/tests/{family}-tiny.yaml"),
            $"model.path={R($"tests/fixtures/families/{family}")}", $"data.train={R("datasets/general/heldout.jsonl")}", $"output.dir={tmp["run"]}");
        Assert.True(code == 0, stderr + stdout);
        var losses = MetricsLog.Read(Path.Combine(tmp["run"], "metrics.csv")).Select(r => r.Loss).ToList();
        Assert.Equal(8, losses.Count);
        // Two batches an epoch: the last epoch's mean against the first's.
        Assert.True(losses.TakeLast(2).Average() < 0.8 * losses.Take(2).Average(), $"{family}: losses {string.Join(", ", losses.Select(l => l.ToString("F3")))}");
        Assert.True(File.Exists(Path.Combine(tmp["run"], "final", "adapter_model.safetensors")));
    }

    [Theory]
    [InlineData("llama3")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("gemma")]
    [InlineData("gemma2")]
    public void Every_tiny_config_validates_against_its_fixture(string family)
    {
        var c = TrainConfig.Load(R($"configs/tests/{family}-tiny.yaml"),
            [$"model.path={R($"tests/fixtures/families/{family}")}", $"data.train={R("datasets/general/heldout.jsonl")}"]);
        Assert.Equal(("nf4-dq", DType.Fp32), (c.Quantization.Format.ToString(), c.Quantization.ComputeDtype));
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], c.Lora.TargetModules);   // all-linear, from config.json
    }
}
