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
/// Quantization-aware fine-tuning (`quantization.aware: FORMAT`): the config key accepts every format with a fake
/// quantization (weight-only formats, ternary with its activations, GGUF's q4_0/q8_0) over a dense base, and refuses
/// the others listing the choices. The arithmetic is in Peft/QuantizationAwareLoraTests.
/// </summary>
[Trait("tier", "unit")]
public class QuantizationAwareTests
{
    const string Minimal = "model:\n  path: MODEL\ndata:\n  train: TRAIN\n";

    static string Yaml(string body) =>
        (Minimal + body).Replace("MODEL", Paths.TinyModel).Replace("TRAIN", Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl"));

    static TrainConfig Parse(string body) => TrainConfig.Parse(Yaml(body), "x.yaml");

    static string ErrorOf(string body) => Assert.Throws<ConfigException>(() => Parse(body)).Message;

    [Theory]
    [InlineData("ternary")]
    [InlineData("nf4")]
    [InlineData("nf4-dq")]
    [InlineData("int4-g32")]
    [InlineData("hqq4")]
    [InlineData("q4_0")]
    [InlineData("q4_0-f16")]
    [InlineData("q8_0")]
    public void The_aware_key_names_a_format_with_a_fake_quantizer_over_a_dense_base(string aware)
    {
        var c = Parse($"quantization:\n  aware: {aware}\nlora:\n  dropout: 0\n");
        Assert.Equal(BaseFormat.Parse("none"), c.Quantization.Format);     // no type: the dense base
        Assert.Equal(BaseFormat.Parse(aware), c.Quantization.Aware);
        Assert.Contains($"aware: {aware}", c.ToYaml());
        Assert.Equal(c.Quantization, TrainConfig.Parse(c.ToYaml(), "resolved.yaml").Quantization);
        Assert.Equal(BaseFormat.Parse("bf16"), Parse($"quantization:\n  type: bf16\n  aware: {aware}\nlora:\n  dropout: 0\n").Quantization.Format);
    }

    [Fact]
    public void Formats_without_a_fake_quantizer_a_quantized_base_and_dropout_are_refused()
    {
        string choices = string.Join(", ", BaseFormats.AwareNames);
        Assert.StartsWith("bf16, fp16, fp32, nf4, fp4, int8, int4, int3, llm-int8, hqq", choices);
        Assert.Contains("ternary, q4_0, q8_0", choices);
        Assert.DoesNotContain("gptq", choices);
        Assert.Contains($"'quantization.aware' must be a format quantization-aware training can target ({choices}); got 'gptq4-g128'",
            ErrorOf("quantization:\n  aware: gptq4-g128\n"));
        Assert.Contains($"'quantization.aware' must be a format quantization-aware training can target ({choices}); got 'none'",
            ErrorOf("quantization:\n  aware: none\n"));
        Assert.Contains("'quantization.aware' trains a dense base toward ternary: set 'quantization.type' to none, bf16, fp16 or fp32 (got nf4-dq)",
            ErrorOf("quantization:\n  type: nf4-dq\n  aware: ternary\n"));
        Assert.Contains("'quantization.aware': base format 'hqq5'", ErrorOf("quantization:\n  aware: hqq5\n"));
        Assert.Contains("'lora.dropout' must be 0 with quantization.aware", ErrorOf("quantization:\n  aware: q4_0\nlora:\n  dropout: 0.05\n"));
    }
}

/// <summary>A short aware run of the recipe on the tiny model: the adapter, merged into the target format, computes what training computed.</summary>
[Collection("training runs")]
[Trait("tier", "e2e")]
public class QuantizationAwareRecipeTests
{
    /// <param name="aware">the target format.</param>
    /// <param name="stored">true: `merge --quantization FORMAT` writes it; false (no checkpoint layout: q4_0) the merge
    /// is written dense in fp32 and quantized on load, as `eval --quantization q4_0-f16` does.</param>
    [Theory]
    [InlineData("ternary", true)]
    [InlineData("nf4", true)]
    [InlineData("q4_0-f16", false)]
    public void An_aware_run_trains_and_its_merge_into_the_format_equals_the_aware_model(string aware, bool stored)
    {
        using var tmp = Paths.Temp();
        var config = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
        [
            $"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            "data.validation=null", "data.max_seq_len=64", "data.packing=false", "training.micro_batch_size=2",
            "training.gradient_accumulation_steps=1", "training.max_steps=2", "training.save_every=100", "training.eval_every=100",
            "training.warmup_steps=0", "lora.dropout=0", "quantization.type=none", "quantization.double_quant=false",
            $"quantization.aware={aware}", $"output.dir={tmp["run"]}",
        ]);
        var observer = new MessageObserver();
        var result = LoraFinetuneRecipe.Run(config, new TrainOptions(), observer, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, result.Stop);
        Assert.Contains(observer.Messages, m => m.StartsWith("quantization-aware training"));

        var format = BaseFormat.Parse(aware);
        MergedCheckpoint.Write(Paths.TinyModel, result.FinalAdapter!, tmp["merged"],
            new MergeOptions(DType: ScalarType.Float32, Quantization: stored ? format : null));
        using var merged = ModelBuilder.Build(tmp["merged"], new ModelBuildOptions(CPU, ScalarType.Float32, stored ? new DenseFormat(null) : format));
        using var trained = ModelBuilder.Build(Paths.TinyModel, new ModelBuildOptions(CPU, ScalarType.Float32, new DenseFormat(ScalarType.Float32),
            AdapterDir: result.FinalAdapter, Aware: format));
        using var a = MergeTestAdapter.Logits(merged.Model);
        using var b = MergeTestAdapter.Logits(trained.Model);
        // The same stored weights; ternary's integer sums differ from the fake forward's fp32 ones by summation order,
        // and each layer rounds its input to 8-bit codes (BitNet's per-token absmax), so a hidden state that lands on
        // a code's boundary in one path and not the other moves by a whole code step there: how many do is a matter
        // of the CPU's summation order (none on one machine, a few on another), so the bound is on the logits as a
        // whole (cosine, and the mean difference against the logits' spread), not one rounding step.
        // The weight-only formats compute the same products (the head and norms are the same dense tensors), but the
        // merged model's bare down projections add each layer's MLP residual inside their GEMM (Quant.ResidualProduct:
        // the fp32 sum rounded once) where the aware linears' fake product is added after (rounded twice): last-bit
        // differences, ~1e-5 on these logits, within the families' parity bound of 1e-4.
        if (aware == "ternary")
        {
            using var fa = a.to(ScalarType.Float64).flatten();
            using var fb = b.to(ScalarType.Float64).flatten();
            double cosine = (fa.dot(fb) / (fa.norm() * fb.norm())).item<double>();
            double meanDiff = (fa - fb).abs().mean().item<double>(), spread = fb.std().item<double>();
            Assert.True(cosine > 0.9999 && meanDiff < 0.01 * spread,
                $"cosine {cosine:F6}, mean abs diff {meanDiff:E2} against a spread of {spread:E2}, max abs diff {MergeTestAdapter.MaxAbsDiff(a, b)}");
        }
        else Assert.True(MergeTestAdapter.MaxAbsDiff(a, b) < 1e-4, $"max abs diff {MergeTestAdapter.MaxAbsDiff(a, b)}");
    }
}
