using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Tests.Peft;
using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>
/// Quantization-aware fine-tuning to ternary (`quantization.aware: ternary`): the config key, the straight-through
/// forward against the frozen ternary linear it stands for, gradients reaching LoRA through the rounding, and a
/// short recipe run whose adapter merged into ternary computes what training computed.
/// </summary>
[Trait("tier", "unit")]
public class QuantizationAwareTests
{
    const string Minimal = "model:\n  path: MODEL\ndata:\n  train: TRAIN\n";

    static string Yaml(string body) =>
        (Minimal + body).Replace("MODEL", Paths.TinyModel).Replace("TRAIN", Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl"));

    static TrainConfig Parse(string body) => TrainConfig.Parse(Yaml(body), "x.yaml");

    static string ErrorOf(string body) => Assert.Throws<ConfigException>(() => Parse(body)).Message;

    [Fact]
    public void The_aware_key_names_a_format_with_a_fake_quantizer_over_a_dense_base()
    {
        var c = Parse("quantization:\n  aware: ternary\nlora:\n  dropout: 0\n");
        Assert.Equal(BaseFormat.Parse("none"), c.Quantization.Format);     // no type: the dense base
        Assert.Equal(BaseFormat.Parse("ternary"), c.Quantization.Aware);
        Assert.Contains("aware: ternary", c.ToYaml());
        Assert.Equal(c.Quantization, TrainConfig.Parse(c.ToYaml(), "resolved.yaml").Quantization);
        Assert.Equal(BaseFormat.Parse("bf16"), Parse("quantization:\n  type: bf16\n  aware: ternary\nlora:\n  dropout: 0\n").Quantization.Format);

        Assert.Contains("'quantization.aware' must be a format quantization-aware training can target (ternary); got 'nf4'",
            ErrorOf("quantization:\n  aware: nf4\n"));
        Assert.Contains("'quantization.aware' trains a dense base toward ternary: set 'quantization.type' to none, bf16, fp16 or fp32 (got nf4-dq)",
            ErrorOf("quantization:\n  type: nf4-dq\n  aware: ternary\n"));
        Assert.Contains("'quantization.aware': base format 'hqq5'", ErrorOf("quantization:\n  aware: hqq5\n"));
        Assert.Contains("'lora.dropout' must be 0 with quantization.aware", ErrorOf("quantization:\n  aware: ternary\nlora:\n  dropout: 0.05\n"));
    }

    [Fact]
    public void The_fake_forward_is_the_frozen_ternary_linear_within_fp32_summation_rounding()
    {
        const int n = 5, k = 64, m = 12;
        using var g = new Generator(31);
        using var w = randn([m, k], generator: g) * 0.1;
        using var x = randn([n, k], generator: g);
        using var fake = TernaryFakeQuantization.Instance.Linear(x, w, ScalarType.Float32);
        var stored = TernaryWeight.Quantize(w);
        using var frozen = new TernaryLinear(stored, ScalarType.Float32, KernelSelection.Portable);
        using var real = frozen.forward(x);
        // fake sums (n_i / s) (q_i scale) in fp32, the frozen linear sums n_i q_i exactly: gamma_k sum |x~ w~| apart.
        using var xq = TernaryActivations.FakeQuantize(x);
        double u = 1.0 / (1 << 24), gamma = (k + 4) * u / (1 - (k + 4) * u);
        using var bound = nn.functional.linear(xq.abs(), stored.Dequantize(ScalarType.Float32).abs()) * gamma;
        using var excess = (fake - real).abs() - bound;
        Assert.True(excess.max().item<float>() <= 0, $"exceeds by {excess.max().item<float>()}");
    }

    [Fact]
    public void Gradients_pass_straight_through_both_roundings()
    {
        using var g = new Generator(32);
        using var w = (randn([8, 16], generator: g) * 0.1).requires_grad_(true);
        using var x = randn([3, 16], generator: g).requires_grad_(true);
        using var gy = randn([3, 8], generator: g);
        TernaryFakeQuantization.Instance.Linear(x, w, ScalarType.Float32).backward([gy]);
        // y = x~ @ w~^T with both roundings the identity in backward: dW = gy^T x~, dx = gy w~.
        using var xq = TernaryActivations.FakeQuantize(x.detach());
        var stored = TernaryWeight.Quantize(w.detach());
        using var wq = stored.Dequantize(ScalarType.Float32);
        using var dw = gy.t().matmul(xq);
        using var dx = gy.matmul(wq);
        Assert.True((w.grad! - dw).abs().max().item<float>() <= 1e-6f * dw.abs().max().item<float>());
        Assert.True((x.grad! - dx).abs().max().item<float>() <= 1e-6f * dx.abs().max().item<float>());
    }

    [Fact]
    public void Lora_over_an_aware_base_trains_inside_the_merged_weight()
    {
        using var g = new Generator(33);
        using var w0 = randn([16, 32], generator: g) * 0.1;
        var aware = new QuantizationAwareLinear(new DenseFrozenLinear(w0.clone(), ScalarType.Float32), TernaryFakeQuantization.Instance);
        using var lora = new LoraLinear(aware, r: 4, alpha: 8, dropout: 0, useRsLora: false, g);
        using var x = randn([2, 3, 32], generator: g);
        using (no_grad())
        {
            using var a = lora.forward(x);
            using var b = TernaryFakeQuantization.Instance.Linear(x, w0, ScalarType.Float32);
            Assert.True(Bits.Same(b, a), "B = 0: the fake-quantized base");
            lora.B.normal_(generator: g);
        }
        using (var scope = NewDisposeScope()) lora.forward(x).square().mean().backward();
        Assert.True(lora.A.grad!.abs().sum().item<float>() > 0);
        Assert.True(lora.B.grad!.abs().sum().item<float>() > 0);
        using (no_grad())
        {
            // The forward is fake(W0 + s B A): what a ternary merge of this adapter stores.
            using var merged = LoraMath.MergedWeight(w0, lora.A, lora.B, lora.Scaling);
            using var expected = TernaryFakeQuantization.Instance.Linear(x, merged, ScalarType.Float32);
            using var actual = lora.forward(x);
            Assert.True((expected - actual).abs().max().item<float>() <= 1e-5f);
        }
        Assert.Equal("fp32, aware ternary", aware.FormatName);
    }
}

/// <summary>A short aware run of the recipe on the tiny model: the adapter, merged into ternary, computes what training's last forward computed.</summary>
[Collection("training runs")]
[Trait("tier", "e2e")]
public class QuantizationAwareRecipeTests
{
    sealed class Quiet : ITrainingObserver
    {
        public readonly List<string> Messages = [];
        public void OnStart(RunSummary summary) { }
        public void OnStep(StepMetrics m) { }
        public void OnEvaluation(int step, double loss, bool best) { }
        public void OnCheckpoint(int step, string directory) { }
        public void OnMessage(string message) => Messages.Add(message);
        public void OnCheckpointFileWritten(string path) { }
    }

    [Fact]
    public void An_aware_run_trains_and_its_ternary_merge_equals_the_aware_model()
    {
        using var tmp = Paths.Temp();
        var config = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
        [
            $"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            "data.validation=null", "data.max_seq_len=64", "data.packing=false", "training.micro_batch_size=2",
            "training.gradient_accumulation_steps=1", "training.max_steps=2", "training.save_every=100", "training.eval_every=100",
            "training.warmup_steps=0", "lora.dropout=0", "quantization.type=none", "quantization.double_quant=false",
            "quantization.aware=ternary", $"output.dir={tmp["run"]}",
        ]);
        var observer = new Quiet();
        var result = LoraFinetuneRecipe.Run(config, new TrainOptions(), observer, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, result.Stop);
        Assert.Contains(observer.Messages, m => m.StartsWith("quantization-aware training"));

        var ternary = BaseFormat.Parse("ternary");
        MergedCheckpoint.Write(Paths.TinyModel, result.FinalAdapter!, tmp["merged"], new MergeOptions(DType: ScalarType.Float32, Quantization: ternary));
        using var merged = ModelBuilder.Build(tmp["merged"], new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(null)));
        using var trained = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(ScalarType.Float32),
            AdapterDir: result.FinalAdapter, Aware: ternary));
        using var a = MergeTestAdapter.Logits(merged.Model);
        using var b = MergeTestAdapter.Logits(trained.Model);
        // Same ternary codes and scales; the two differ only by fp32 summation order in every linear.
        Assert.True(MergeTestAdapter.MaxAbsDiff(a, b) < 1e-3, $"max abs diff {MergeTestAdapter.MaxAbsDiff(a, b)}");
    }
}
