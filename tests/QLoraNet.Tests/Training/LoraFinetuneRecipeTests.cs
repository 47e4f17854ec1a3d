using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>End-to-end runs of the recipe on the tiny model (NF4 + DQ base, fp32 on CPU): resume equivalence,
/// checkpoint atomicity, output-dir protection. Kept to a few short steps.</summary>
[Collection("training runs")] // sequential: they are the heaviest tests
[Trait("tier", "e2e")]
public class LoraFinetuneRecipeTests
{
    internal static TrainConfig Config(string outDir, params string[] extra) => TrainConfig.Load(
        Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
        new[]
        {
            $"model.path={Paths.TinyModel}",
            $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            "data.validation=null", "data.val_fraction=0.03", // ~16 held-out examples: quick evaluations
            "data.max_seq_len=96", "data.packing=false", "training.micro_batch_size=2",
            "training.gradient_accumulation_steps=2", "training.max_steps=6", "training.save_every=2",
            "training.eval_every=3", "training.warmup_steps=2", "training.gradient_checkpointing=true",
            "lora.dropout=0.1", $"output.dir={outDir}", "output.keep_last=5",
        }.Concat(extra));

    internal sealed class Recorder(Action<StepMetrics>? onStep = null, Action<string>? onCheckpointFile = null, Action<string>? onMessage = null) : ITrainingObserver
    {
        public readonly Dictionary<int, double> Losses = new();
        public readonly Dictionary<int, double> StepSeconds = new();
        public readonly Dictionary<int, double> Validation = new();
        public void OnStart(RunSummary summary) { }
        public void OnStep(StepMetrics m) { Losses[m.Step] = m.Loss; StepSeconds[m.Step] = m.StepSeconds; onStep?.Invoke(m); }
        public void OnEvaluation(int step, double loss, bool best) => Validation[step] = loss;
        public void OnCheckpoint(int step, string directory) { }
        public void OnMessage(string message) => onMessage?.Invoke(message);
        public void OnCheckpointFileWritten(string path) => onCheckpointFile?.Invoke(path);
    }

    [Fact]
    public void Interrupted_and_resumed_run_gives_the_same_losses_as_an_uninterrupted_one()
    {
        using var tmp = Paths.Temp();
        var whole = new Recorder();
        var r1 = LoraFinetuneRecipe.Run(Config(tmp["whole"]), new TrainOptions(), whole, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, r1.Stop);
        Assert.Equal(6, whole.Losses.Count);
        // Each step is read one late, or at once before an evaluation or a checkpoint: either way a step's time is its
        // own (steps of equal work; a step read right after the next launch once reported ~0 s).
        double median = whole.StepSeconds.Values.Order().ElementAt(3);
        Assert.All(whole.StepSeconds, kv => Assert.True(kv.Value > median / 20, $"step {kv.Key}: {kv.Value} s against a median of {median} s"));

        using var cts = new CancellationTokenSource();
        var first = new Recorder(m => { if (m.Step == 3) cts.Cancel(); });
        var r2 = LoraFinetuneRecipe.Run(Config(tmp["split"]), new TrainOptions(), first, cts.Token);
        Assert.Equal(TrainStop.Interrupted, r2.Stop);
        Assert.Equal(3, r2.StepsDone);
        Assert.True(Directory.Exists(Path.Combine(tmp["split"], "checkpoints", "step-3")));

        var second = new Recorder();
        var r3 = LoraFinetuneRecipe.Run(Config(tmp["split"]), new TrainOptions("latest"), second, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, r3.Stop);
        Assert.Equal(new[] { 4, 5, 6 }, second.Losses.Keys.Order());
        for (int s = 1; s <= 6; s++)
            Assert.Equal(whole.Losses[s], s <= 3 ? first.Losses[s] : second.Losses[s]); // exact, fp32 on CPU
        Assert.Equal(whole.Validation[6], second.Validation[6]);

        var a = File.ReadAllBytes(Path.Combine(r1.FinalAdapter!, "adapter_model.safetensors"));
        var b = File.ReadAllBytes(Path.Combine(r3.FinalAdapter!, "adapter_model.safetensors"));
        Assert.Equal(a, b);
        // metrics.csv reads as one run: the base model's row (step 0), then steps 1..6 once each
        Assert.Equal(Enumerable.Range(0, 7), MetricsLog.Read(Path.Combine(tmp["split"], "metrics.csv")).Select(r => r.Step));
        Assert.True(whole.Validation[6] < whole.Validation[0] - 0.05, $"validation loss should fall: {whole.Validation[0]} -> {whole.Validation[6]}");
    }

    [Fact]
    public void A_kill_while_writing_a_checkpoint_leaves_the_previous_one_intact()
    {
        using var tmp = Paths.Temp();
        string outDir = tmp["run"];
        // Die while step-4's checkpoint is half written (after its adapter, before the optimizer state).
        var dying = new Recorder(onCheckpointFile: f => { if (f.Contains(".step-4.tmp") && f.EndsWith("adapter")) throw new IOException("simulated kill"); });
        Assert.Throws<IOException>(() => LoraFinetuneRecipe.Run(Config(outDir), new TrainOptions(), dying, CancellationToken.None));
        var store = new CheckpointStore(outDir, 5);
        Assert.Equal(new[] { 2 }, store.List().Select(c => c.Step));
        Assert.False(Directory.Exists(store.PathFor(4)));

        // A leftover staging directory from a real kill is never taken for a checkpoint.
        Directory.CreateDirectory(Path.Combine(store.Root, ".step-4.tmp-deadbeef", "adapter"));
        Assert.EndsWith("step-2", store.Latest());

        var resumed = new Recorder();
        var r = LoraFinetuneRecipe.Run(Config(outDir), new TrainOptions("latest"), resumed, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, r.Stop);
        Assert.Equal(new[] { 3, 4, 5, 6 }, resumed.Losses.Keys.Order());
        Assert.Empty(Directory.GetDirectories(store.Root, ".step-*"));
    }

    [Fact]
    public void A_new_run_refuses_an_output_dir_holding_checkpoints()
    {
        using var tmp = Paths.Temp();
        LoraFinetuneRecipe.Run(Config(tmp["run"], "training.max_steps=2"), new TrainOptions(), new Recorder(), CancellationToken.None);
        var e = Assert.Throws<InvalidOperationException>(() =>
            LoraFinetuneRecipe.Run(Config(tmp["run"], "training.max_steps=2"), new TrainOptions(), new Recorder(), CancellationToken.None));
        Assert.Contains("--resume", e.Message);
        Assert.Contains(tmp["run"], e.Message);
    }

    [Fact]
    public void Run_writes_a_peft_adapter_metrics_curve_and_resolved_config()
    {
        using var tmp = Paths.Temp();
        var r = LoraFinetuneRecipe.Run(Config(tmp["run"], "training.max_steps=2", "training.gradient_checkpointing=false"), new TrainOptions(), new Recorder(), CancellationToken.None);
        Assert.True(File.Exists(Path.Combine(r.FinalAdapter!, "adapter_model.safetensors")));
        Assert.True(File.Exists(Path.Combine(r.FinalAdapter!, "adapter_config.json")));
        Assert.True(new FileInfo(Path.Combine(tmp["run"], RunOutput.LossCurveFile)).Length > 1000);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(tmp["run"], RunOutput.MetricsFile)).Length); // header, step 0, steps 1-2
        var reloaded = TrainConfig.Load(Path.Combine(tmp["run"], RunOutput.ResolvedConfigFile));
        Assert.Equal(2, reloaded.Training.MaxSteps);
    }

    [Fact]
    public void Early_stopping_ends_the_run_when_validation_loss_stops_improving()
    {
        using var tmp = Paths.Temp();
        // A learning rate far too high makes every evaluation after the first worse.
        var rec = new Recorder();
        var r = LoraFinetuneRecipe.Run(Config(tmp["run"], "training.learning_rate=1.0", "training.max_grad_norm=0",
            "training.eval_every=1", "training.early_stopping_patience=2", "training.max_steps=12", "training.warmup_steps=0"),
            new TrainOptions(), rec, CancellationToken.None);
        Assert.Equal(TrainStop.EarlyStopped, r.Stop);
        Assert.True(r.StepsDone < 12, $"ran {r.StepsDone} steps");
        Assert.Contains("early stopping", r.Message);
        Assert.NotNull(r.FinalAdapter);
        Assert.True(File.Exists(Path.Combine(r.FinalAdapter!, "adapter_model.safetensors")));
    }

    [Fact]
    public void A_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint()
    {
        using var tmp = Paths.Temp();
        // A copy of the tiny model whose final norm weight is NaN: refused by name at load, unless the config opts
        // out (model.allow_non_finite_weights, through ModelBuilder into the loader); then every loss is NaN.
        string model = tmp["model"];
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(Paths.TinyModel)) File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        using (var ckpt = QLoraNet.Formats.CheckpointReader.Open(Paths.TinyModel))
        {
            string shard = ckpt.Info("model.norm.weight").ShardPath;
            using var f = QLoraNet.Formats.SafeTensorsFile.Open(shard);
            var tensors = f.Names.ToDictionary(n => n, n => f.Read(n));
            tensors["model.norm.weight"].fill_(float.NaN);
            QLoraNet.Formats.SafeTensors.Write(Path.Combine(model, Path.GetFileName(shard)), tensors);
        }
        string[] keys = [$"model.path={model}", "quantization.type=none", "quantization.double_quant=false"];
        var refused = Assert.Throws<InvalidDataException>(() =>
            LoraFinetuneRecipe.Run(Config(tmp["refused"], keys), new TrainOptions(), new Recorder(), CancellationToken.None));
        Assert.Contains("model.norm.weight", refused.Message);
        var r = LoraFinetuneRecipe.Run(Config(tmp["run"], [.. keys, "model.allow_non_finite_weights=true"]),
            new TrainOptions(), new Recorder(), CancellationToken.None);
        Assert.Equal(TrainStop.NonFiniteLoss, r.Stop);
        Assert.Equal(0, r.StepsDone);
        Assert.Null(r.FinalAdapter);
        Assert.Contains("NaN", r.Message);
        Assert.Contains("learning_rate", r.Message);
        Assert.Empty(new CheckpointStore(tmp["run"], 5).List());
    }
}
