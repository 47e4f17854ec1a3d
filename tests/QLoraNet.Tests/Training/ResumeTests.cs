using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>
/// Resume honours only what it can (issue 11): a config that changed in keys breaking exact resume is refused with
/// the list of differences and nothing written; <c>--resume-with-changes</c> continues, logs them and records the
/// new config beside the original; changes to logging and cadence pass; <c>--resume</c> never takes a following
/// <c>key=value</c> as its path. On <see cref="TinyRun"/>'s one-layer model.
/// </summary>
[Collection("training runs")]
[Trait("tier", "e2e")]
public class ResumeTests
{
    static TrainResult Run(TinyRun run, string? resume, bool withChanges, params string[] overrides) =>
        LoraFinetuneRecipe.Run(TrainConfig.Load(run.ConfigPath, overrides), new TrainOptions(resume, ResumeWithChanges: withChanges), NullObserver.Instance, CancellationToken.None);

    /// <summary>Every file under <paramref name="dir"/> with its bytes and write time.</summary>
    static Dictionary<string, (string, DateTime)> State(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(
            f => Path.GetRelativePath(dir, f), f => (Convert.ToHexString(File.ReadAllBytes(f)), File.GetLastWriteTimeUtc(f)));

    [Fact]
    public void A_resume_with_a_changed_schedule_or_lora_shape_is_refused_listing_every_difference_and_writes_nothing()
    {
        using var run = new TinyRun(maxSteps: 4, saveEvery: 2, keepLast: 3);
        Assert.Equal(TrainStop.Completed, Run(run, null, false).Stop);
        var before = State(run.OutDir);

        var e = Assert.Throws<InvalidOperationException>(() =>
            Run(run, "latest", false, "training.learning_rate=5e-4", "training.max_steps=6", "lora.r=8"));
        Assert.Contains("3 change(s) since checkpoint", e.Message);
        Assert.Contains("lora.r 4 -> 8; training.learning_rate 0.001 -> 0.0005; training.max_steps 4 -> 6", e.Message);
        Assert.Contains("--resume-with-changes", e.Message);
        Assert.DoesNotContain("\n", e.Message);
        Assert.Equal(before, State(run.OutDir));   // config.yaml still describes the checkpoints beside it
    }

    [Fact]
    public void Resume_with_changes_continues_logs_them_and_records_the_new_config_beside_the_original()
    {
        using var run = new TinyRun(maxSteps: 4, saveEvery: 2, keepLast: 3);
        Run(run, null, false);
        string original = Path.Combine(run.OutDir, RunOutput.ResolvedConfigFile);
        var originalBytes = File.ReadAllBytes(original);

        var messages = new MessageObserver();
        var r = LoraFinetuneRecipe.Run(TrainConfig.Load(run.ConfigPath, ["training.max_steps=6"]),
            new TrainOptions("latest", ResumeWithChanges: true), messages, CancellationToken.None);
        Assert.Equal(TrainStop.Completed, r.Stop);
        Assert.Equal(6, r.StepsDone);
        Assert.Contains("resuming with a changed config (--resume-with-changes): training.max_steps 4 -> 6", messages.Messages);
        Assert.Equal(originalBytes, File.ReadAllBytes(original));
        string recorded = Path.Combine(run.OutDir, RunOutput.ResumeConfigFile(4));
        Assert.Equal(6, TrainConfig.Load(recorded).Training.MaxSteps);
        Assert.Contains($"the config of this resume is recorded in {recorded}", messages.Messages);

        // Checkpoints saved since carry the config they were trained under: resuming them again needs no flag.
        Assert.Equal(TrainStop.Completed, Run(run, "latest", false, "training.max_steps=6").Stop);
    }

    [Fact]
    public void Changes_to_logging_and_checkpoint_cadence_resume_without_a_word_or_a_new_file()
    {
        using var run = new TinyRun(maxSteps: 4, saveEvery: 2, keepLast: 3);
        using (var cts = new CancellationTokenSource())
        {
            var stopAt2 = new StopAfter(2, cts);
            var first = LoraFinetuneRecipe.Run(TrainConfig.Load(run.ConfigPath), new TrainOptions(), stopAt2, cts.Token);
            Assert.Equal(TrainStop.Interrupted, first.Stop);
        }
        var r = Run(run, "latest", false, "training.log_every=3", "training.save_every=1", "output.keep_last=5");
        Assert.Equal(TrainStop.Completed, r.Stop);
        Assert.Equal(4, r.StepsDone);
        Assert.Empty(Directory.GetFiles(run.OutDir, "config.resume-*"));
    }

    sealed class StopAfter(int step, CancellationTokenSource cts) : ITrainingObserver
    {
        public void OnStart(RunSummary summary) { }
        public void OnStep(StepMetrics m) { if (m.Step == step) cts.Cancel(); }
        public void OnEvaluation(int s, double validationLoss, bool isBest) { }
        public void OnCheckpoint(int s, string directory) { }
        public void OnMessage(string message) { }
    }

    [Fact]
    public void Resume_is_a_flag_so_a_following_override_stays_an_override_and_resume_from_names_a_checkpoint()
    {
        using var run = new TinyRun(maxSteps: 4, saveEvery: 2, keepLast: 3);
        string other = run.Dir["other"];
        var (code, _, err) = CliRunner.Run("train", run.ConfigPath, "--resume", $"output.dir={other}");
        Assert.Equal(1, code);
        Assert.Equal($"error: --resume: no complete checkpoint under {Path.Combine(other, "checkpoints")}; start without --resume", err.Trim());

        Assert.Equal(0, CliRunner.Run("train", run.ConfigPath).Code);
        string step2 = new CheckpointStore(run.OutDir, 3).PathFor(2);
        var (code2, stdout2, _) = CliRunner.Run("train", run.ConfigPath, "--resume-from", step2, "--verbose");
        Assert.Equal(0, code2);
        Assert.Contains("resuming after step 2", stdout2);

        (code, _, err) = CliRunner.Run("train", run.ConfigPath, "--resume", "--resume-from", step2);
        Assert.Equal(1, code);
        Assert.Contains("--resume and --resume-from: give one", err);
        (code, _, err) = CliRunner.Run("train", run.ConfigPath, "--resume-with-changes");
        Assert.Equal(1, code);
        Assert.Contains("--resume-with-changes applies to a resume", err);
    }
}
