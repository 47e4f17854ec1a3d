using System.Text.Json;

namespace QLoraNet.Tests.Cli;

/// <summary>`bench train` runs train's own step (TrainStep) on random tokens; on the CPU and the tiny model it is a
/// quick check that the whole path works (the timings themselves are for GPUs).</summary>
[Trait("tier", "e2e")]
public class BenchTrainTests
{
    [Fact]
    public void Runs_trains_step_with_accumulation_on_the_cpu_and_prints_one_json_line()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "train", "--model", Paths.TinyModel, "--device", "cpu",
            "--seq", "16", "--batch", "2", "--steps", "1", "--warmup", "1", "--grad-accum", "2", "--dropout", "0.1",
            "--hold-seconds", "0");
        Assert.True(code == 0, stderr + stdout);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal(2, root.GetProperty("grad_accum").GetInt32());
        Assert.Equal("nf4-dq", root.GetProperty("quantization").GetString());
        double loss = root.GetProperty("loss").GetDouble();
        // Random tokens over a 32000-word vocabulary: a pretrained model, confident about real text, does worse than
        // the uniform guess ln(32000) = 10.4 on them.
        Assert.True(double.IsFinite(loss) && loss > Math.Log(32000), $"loss {loss}");
        Assert.True(root.GetProperty("tokens_per_s").GetDouble() > 0);

        // The kernel choice is reported as `train` reports it, and the calls each path served: on the CPU every fused op
        // runs its reference.
        var kernels = root.GetProperty("kernels").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("rmsnorm on cpu: torch-ops (CPU tensors: torch-op reference)", kernels);
        var calls = root.GetProperty("fused_calls_per_step");
        (double Kernel, double Reference) Calls(string op) =>
            (calls.GetProperty(op).GetProperty("kernel").GetDouble(), calls.GetProperty(op).GetProperty("reference").GetDouble());
        // Per micro-batch (4 layers, checkpointed: each layer runs in forward and again in backward, but the last, whose
        // backward reads its forward's record): 2 norms, one RoPE and one gated unit per layer run, plus the final
        // norm; 2 micro-batches per step.
        Assert.Equal((0.0, 2 * (2 * (4 + 3) + 1.0)), Calls("rmsnorm"));
        Assert.Equal((0.0, 2 * (4 + 3.0)), Calls("rope"));
        Assert.Equal((0.0, 2 * (4 + 3.0)), Calls("glu"));
    }

    [Fact]
    public void Split_needs_a_gpu()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "train", "--model", Paths.TinyModel, "--device", "cpu", "--split");
        Assert.NotEqual(0, code);
        Assert.Contains("--split needs --device cuda", stderr);
    }
}
