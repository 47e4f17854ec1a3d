using System.Diagnostics;
using System.Text.Json;
using QLoraNet.Peft;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>One short run on the tiny model (NF4 + DQ, a validation file, TensorBoard on, sample prompts), made once
/// and shared by the tests below, which check what it shows and what it leaves behind.</summary>
public sealed class ReportedRun : IDisposable
{
    public TempDir Tmp { get; } = Paths.Temp();
    public string OutDir => Tmp["run"];
    public string ValidationFile => Tmp["validation.jsonl"];
    public TrainResult Result { get; }
    public Dictionary<int, double> Validation { get; } = new();
    public List<StepMetrics> Steps { get; } = new();
    public List<SampleGeneration> Samples { get; } = new();
    public List<string> Messages { get; } = new();

    public static readonly string[] Prompts = ["How much is the Traverse 65 backpack?", "What is your return policy?"];

    public const int MaxSeqLen = 96, MicroBatch = 2;

    public ReportedRun()
    {
        File.WriteAllLines(ValidationFile, File.ReadLines(Path.Combine(Paths.RepoRoot, "datasets", "sales", "validation.jsonl")).Take(6));
        var config = Config(OutDir);
        Result = LoraFinetuneRecipe.Run(config, new TrainOptions(), new Recorder(this), CancellationToken.None);
    }

    public TrainConfig Config(string outDir, params string[] extra) => TrainConfig.Load(
        Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
        new[]
        {
            $"model.path={Paths.TinyModel}",
            $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            $"data.validation={ValidationFile}", $"data.max_seq_len={MaxSeqLen}", "data.packing=true",
            $"training.micro_batch_size={MicroBatch}", "training.gradient_accumulation_steps=1", "training.max_steps=3",
            "training.eval_every=2", "training.save_every=0", "training.warmup_steps=1", "training.log_every=1",
            "training.sample_prompts=[\"" + string.Join("\",\"", Prompts) + "\"]", "training.sample_max_new_tokens=6",
            "output.tensorboard=true", $"output.dir={outDir}",
        }.Concat(extra));

    sealed class Recorder(ReportedRun run) : ITrainingObserver
    {
        public void OnStart(RunSummary summary) { }
        public void OnStep(StepMetrics m) => run.Steps.Add(m);
        public void OnEvaluation(int step, double loss, bool best) => run.Validation[step] = loss;
        public void OnCheckpoint(int step, string directory) { }
        public void OnMessage(string message) => run.Messages.Add(message);
        public void OnSamples(IReadOnlyList<SampleGeneration> samples) => run.Samples.AddRange(samples);
    }

    public void Dispose() => Tmp.Dispose();
}

[Collection("training runs")]
[Trait("tier", "e2e")]
public class RunReportsTests(ReportedRun run) : IClassFixture<ReportedRun>
{
    [Fact]
    public void Metrics_have_a_step_0_row_with_the_base_models_validation_loss_and_memory_named_for_what_it_is()
    {
        var header = File.ReadLines(Path.Combine(run.OutDir, RunOutput.MetricsFile)).First().Split(',');
        Assert.Contains("host_rss_mb", header);
        Assert.Contains("host_peak_rss_mb", header);
        Assert.Contains("device_used_peak_mb", header);
        Assert.Contains("device_allocated_peak_mb", header);
        Assert.Contains("device_reserved_peak_mb", header);
        var rows = MetricsLog.Read(Path.Combine(run.OutDir, RunOutput.MetricsFile));
        Assert.Equal([0, 1, 2, 3], rows.Select(r => r.Step));
        Assert.Equal(run.Validation[0], rows[0].ValidationLoss!.Value, Csv(run.Validation[0]));
        Assert.True(double.IsNaN(rows[0].Loss), "step 0 has no training loss");
        Assert.Equal(run.Validation[2], rows[2].ValidationLoss!.Value, Csv(run.Validation[2]));
        foreach (var r in rows.Skip(1))
        {
            Assert.True(r.HostRssMb > 0 && r.HostPeakRssMb >= r.HostRssMb, $"step {r.Step}: rss {r.HostRssMb}, peak {r.HostPeakRssMb}");
            Assert.Null(r.DeviceUsedPeakMb); // a CPU run has no device figures
            Assert.Null(r.DeviceAllocatedPeakMb);
            Assert.Null(r.DeviceReservedPeakMb);
        }
        // The step's trained tokens are the denominator of its mean, as the step reported them.
        Assert.Equal(run.Steps.Select(s => s.TrainedTokens), rows.Skip(1).Select(r => r.TrainedTokens));
        Assert.All(run.Steps, s => Assert.True(s.TrainedTokens > 0));
        Assert.NotNull(run.Result.PeakMemory);
        Assert.Equal(rows.Max(r => r.HostPeakRssMb), run.Result.PeakMemory!.HostPeakRssMb, Csv(run.Result.PeakMemory!.HostPeakRssMb));
    }

    /// <summary>A float's rounding of a value read back from metrics.csv (itself within 5e-9): one float ulp.</summary>
    static float F(double x) => (float)(Math.Abs(x) * Math.Pow(2, -22));

    /// <summary>metrics.csv writes 9 significant digits ("G9"): a value read back is within 5e-9 relative.</summary>
    static double Csv(double x) => Math.Abs(x) * 5e-9;

    [Fact]
    public void TensorBoard_events_hold_the_scalars_validation_and_samples()
    {
        string dir = Path.Combine(run.OutDir, TensorBoardLog.DirectoryName);
        var scalars = TensorBoardEvents.Scalars(dir);
        var rows = MetricsLog.Read(Path.Combine(run.OutDir, RunOutput.MetricsFile));
        foreach (var r in rows.Where(r => r.IsStep))
        {
            Assert.Equal((float)r.Loss, scalars.Single(s => s.Tag == "train/loss" && s.Step == r.Step).Value, F(r.Loss));
            Assert.Equal((float)r.LearningRate, scalars.Single(s => s.Tag == "train/learning_rate" && s.Step == r.Step).Value, F(r.LearningRate));
            Assert.Equal((float)r.GradNorm, scalars.Single(s => s.Tag == "train/grad_norm" && s.Step == r.Step).Value, F(r.GradNorm));
            Assert.Equal((float)r.TokensPerSecond, scalars.Single(s => s.Tag == "train/tokens_per_s" && s.Step == r.Step).Value, F(r.TokensPerSecond));
            Assert.Equal((float)r.HostPeakRssMb, scalars.Single(s => s.Tag == "memory/host_peak_rss_mb" && s.Step == r.Step).Value, F(r.HostPeakRssMb));
        }
        var evals = scalars.Where(s => s.Tag == "eval/loss").ToList();
        Assert.Equal([0L, 2L, 3L], evals.Select(e => e.Step));
        Assert.Equal((float)run.Validation[0], evals[0].Value);
        var texts = TensorBoardEvents.Texts(dir);
        Assert.Equal(3 * ReportedRun.Prompts.Length, texts.Count);  // steps 0, 2 and 3
        Assert.Contains(texts, t => t.Tag == "samples/0/text_summary" && t.Step == 0 && t.Value.Contains(ReportedRun.Prompts[0]));
        // Wall time in seconds since the Unix epoch (TensorBoard's unit), not .NET ticks.
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.All(TensorBoardEvents.Read(dir).Where(e => e.Summary is not null), e => Assert.InRange(e.WallTime, now - 3600, now + 60));
    }

    [Fact]
    public void Sample_prompts_are_answered_at_step_0_and_every_evaluation()
    {
        var lines = SamplesFile.Read(Path.Combine(run.OutDir, SamplesFile.FileName));
        Assert.Equal(run.Samples, lines);
        Assert.Equal([0, 0, 2, 2, 3, 3], lines.Select(l => l.Step));
        Assert.Equal(ReportedRun.Prompts, lines.Take(2).Select(l => l.Prompt));
        Assert.All(lines, l => Assert.False(string.IsNullOrWhiteSpace(l.Completion)));
    }

    [Fact]
    public void The_adapter_records_the_base_format_it_was_trained_on()
    {
        Assert.Equal("nf4-dq", AdapterProvenance.Load(run.Result.FinalAdapter!)!.BaseFormat.ToString());
        Assert.Equal("nf4-dq", AdapterConfig.Load(run.Result.FinalAdapter!).Provenance!.BaseFormat.ToString());
        // adapter_config.json itself stays exactly peft's field set (no extra key for peft to warn about).
        var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(run.Result.FinalAdapter!, AdapterConfig.FileName))).RootElement;
        Assert.DoesNotContain(json.EnumerateObject(), p => p.Name.Contains("base_format"));
    }

    [Fact]
    public void Eval_data_gives_the_validation_loss_train_reported_for_the_same_adapter_and_file()
    {
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--device", "cpu", "--adapter", run.Result.FinalAdapter!,
            "--data", run.ValidationFile, "--max-seq-len", ReportedRun.MaxSeqLen.ToString(), "--packing",
            "--micro-batch-size", ReportedRun.MicroBatch.ToString(), "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal("", stderr); // no base-format warning: the adapter's own format is the default
        var r = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("nf4-dq", r.GetProperty("quantization").GetString());
        double expected = run.Validation[3];
        // Same batches, same kernels, same fp32 arithmetic in the same order: equal up to the rounding of the final
        // division and of the double accumulation of per-batch float sums (n batches: n·u relative, u = 2^-53).
        Assert.Equal(expected, r.GetProperty("mean_loss").GetDouble(), Math.Abs(expected) * 8 * Math.Pow(2, -52));
    }

    [Fact]
    public void An_explicit_other_base_format_is_used_with_a_one_line_warning()
    {
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--device", "cpu", "--adapter", run.Result.FinalAdapter!,
            "--data", run.ValidationFile, "--max-seq-len", "96", "--quantization", "none", "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal("none", JsonDocument.Parse(stdout).RootElement.GetProperty("quantization").GetString());
        var warning = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("warning: --quantization none:", warning);
        Assert.Contains("nf4-dq", warning);
    }

    [Fact]
    public void Init_from_continues_from_the_adapter_and_refuses_another_shape()
    {
        // Starting from the final adapter, the new run's base evaluation (step 0) is the old run's last one.
        var validation = new Dictionary<int, double>();
        var config = run.Config(run.Tmp["continued"], "training.max_steps=1", "training.sample_prompts=null", "output.tensorboard=false",
            $"lora.init_from={run.Result.FinalAdapter}", "lora.alpha=16");
        var observer = new ValidationRecorder(validation);
        LoraFinetuneRecipe.Run(config, new TrainOptions(), observer, CancellationToken.None);
        Assert.Equal(run.Validation[3], validation[0]);
        Assert.Contains(observer.Messages, m => m.Contains("lora.init_from") && m.Contains("alpha"));

        var wrong = run.Config(run.Tmp["wrong"], "training.max_steps=1", $"lora.init_from={run.Result.FinalAdapter}", "lora.r=4",
            "lora.target_modules=[q_proj,v_proj]");
        var e = Assert.Throws<InvalidDataException>(() => LoraFinetuneRecipe.Run(wrong, new TrainOptions(), NullObserver.Instance, CancellationToken.None));
        Assert.Contains("r 8 (adapter) vs 4 (config)", e.Message);
        Assert.Contains("target_modules [k_proj, o_proj, q_proj, v_proj] (adapter) vs [q_proj, v_proj] (config)", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    sealed class ValidationRecorder(Dictionary<int, double> validation) : ITrainingObserver
    {
        public readonly List<string> Messages = new();
        public void OnStart(RunSummary summary) { }
        public void OnStep(StepMetrics m) { }
        public void OnEvaluation(int step, double loss, bool best) => validation[step] = loss;
        public void OnCheckpoint(int step, string directory) { }
        public void OnMessage(string message) => Messages.Add(message);
    }

    [Fact]
    public void The_loss_curve_is_drawn_with_the_embedded_font_when_no_font_is_installed()
    {
        string here = run.Tmp["here.png"];
        var rows = MetricsLog.Read(Path.Combine(run.OutDir, RunOutput.MetricsFile));
        LossCurve.Write(here, rows, "run", logScale: false);
        Assert.True(new FileInfo(here).Length > 10_000);
        // The font comes from the assembly, whatever the system has.
        using (var typeface = ScottPlot.Fonts.GetTypeface(PlotFont.Ensure(), false, false))
            Assert.Equal("DejaVu Sans", typeface.FamilyName);

        // Draw the same file in a process that sees no font at all (an empty directory mounted over
        // /usr/share/fonts, the only place SkiaSharp's fontconfig-free Linux build looks): the same image.
        if (!OperatingSystem.IsLinux() || !File.Exists("/usr/bin/unshare") || Environment.UserName != "root") return;
        string empty = run.Tmp["nofonts"];
        Directory.CreateDirectory(empty);
        string cli = Path.Combine(AppContext.BaseDirectory, "QLoraNet.dll");
        string headless = run.Tmp["headless.png"];
        var psi = new ProcessStartInfo("/usr/bin/unshare", ["-m", "sh", "-c",
            $"mount --bind '{empty}' /usr/share/fonts && ls -A /usr/share/fonts | wc -l && exec dotnet '{cli}' plot '{run.OutDir}' --title run --out '{headless}'"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (output.Contains("Operation not permitted") || output.Contains("cannot")) return; // no mount namespace here
        Assert.True(p.ExitCode == 0, output);
        Assert.StartsWith("0", output.Trim()); // the child saw no font files
        Assert.Equal(File.ReadAllBytes(here), File.ReadAllBytes(headless));
    }

    [Fact]
    public void A_short_epoch_tail_is_its_own_step_weighed_per_token()
    {
        // The documented choice: an epoch's last micro-batch holds the remaining rows (possibly one), the step that
        // takes it means over its own trained tokens, and the next step starts the next epoch.
        var config = run.Config(run.Tmp["unused"]);
        var tokenizer = QLoraNet.Models.TextTokenizers.Load(Paths.TinyModel);
        var data = TrainingData.Build(config.Data, tokenizer, config.Training.Seed);
        int rows = data.Train.Count, perEpoch = data.MicroBatchesPerEpoch(ReportedRun.MicroBatch);
        var stream = new BatchStream(data, ReportedRun.MicroBatch, 0, 0);
        var sizes = Enumerable.Range(0, perEpoch + 1).Select(_ => stream.Next().Rows).ToList();
        Assert.Equal(rows % ReportedRun.MicroBatch == 0 ? ReportedRun.MicroBatch : rows % ReportedRun.MicroBatch, sizes[perEpoch - 1]);
        Assert.Equal(ReportedRun.MicroBatch, sizes[perEpoch]);
        Assert.Equal(1, stream.Epoch);
    }
}
