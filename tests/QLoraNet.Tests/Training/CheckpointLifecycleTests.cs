using QLoraNet.Training.Config;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>
/// The checkpoint lifecycle of issue 11, in process: pruning stopped at every point (a throwing callback stops it
/// exactly as a kill would: nothing after it runs), leftovers of interrupted runs, the output folder's lock, and
/// which config changes a resume accepts. Real processes and SIGKILL: <see cref="Cli.TrainProcessTests"/>.
/// </summary>
[Trait("tier", "unit")]
public class CheckpointLifecycleTests
{
    static readonly string[] CheckpointFiles = ["adapter/adapter_model.safetensors", "adapter/adapter_config.json", "optimizer.safetensors", TrainerState.FileName];

    static void Save(CheckpointStore store, int step) =>
        store.Save(step, TrainerState.Start with { Step = step }, (dir, written) =>
        {
            Directory.CreateDirectory(Path.Combine(dir, "adapter"));
            foreach (var f in CheckpointFiles.SkipLast(1)) File.WriteAllText(Path.Combine(dir, f), $"step {step}");
            written(Path.Combine(dir, "adapter"));
        }, bestStep: null);

    sealed class StopAt(int at) : Exception { public int At => at; }

    [Fact]
    public void Pruning_stopped_at_any_point_never_lists_a_broken_checkpoint()
    {
        // How many points one prune has: the rename, then each file.
        int points;
        using (var tmp = Paths.Temp())
        {
            int n = 0;
            var store = new CheckpointStore(tmp.Path, 1, onPruning: _ => n++);
            Save(store, 1);
            Save(store, 2);
            points = n;
        }
        Assert.Equal(1 + CheckpointFiles.Length, points);

        for (int stop = 0; stop < points; stop++)
        {
            using var tmp = Paths.Temp();
            int n = 0;
            var store = new CheckpointStore(tmp.Path, 1, onPruning: _ => { if (n++ == stop) throw new StopAt(stop); });
            Save(store, 1);
            Assert.Throws<StopAt>(() => Save(store, 2));   // step-2 is published, the prune of step-1 stopped

            var listed = store.List();
            Assert.Equal(stop == 0 ? [1, 2] : [2], listed.Select(c => c.Step));   // hidden from the first point on
            foreach (var (_, path) in listed)
                foreach (var f in CheckpointFiles) Assert.True(File.Exists(Path.Combine(path, f)), $"stop {stop}: {path} lacks {f}");
            foreach (var dir in Directory.GetDirectories(store.Root, "step-*"))
                Assert.True(File.Exists(Path.Combine(dir, TrainerState.FileName)), $"stop {stop}: partial {dir}");
            Assert.Equal(stop > 0, Directory.GetDirectories(store.Root, CheckpointPruner.DeletingPrefix + "*").Length == 1);

            var done = store.RemoveLeftovers();
            Assert.Equal(stop > 0 ? 1 : 0, done.Count);
            Assert.Empty(Directory.GetFileSystemEntries(store.Root, ".*"));
            Assert.Equal(stop == 0 ? [1, 2] : [2], store.List().Select(c => c.Step));
        }
    }

    [Fact]
    public void Leftovers_of_interrupted_runs_are_removed_and_a_checkpoint_caught_mid_replace_is_restored()
    {
        using var tmp = Paths.Temp();
        string outDir = tmp.Path, root = Path.Combine(outDir, "checkpoints");
        var store = new CheckpointStore(outDir, 3);
        Save(store, 5);
        void Dir(string path, params string[] files)
        {
            Directory.CreateDirectory(Path.Combine(root, path));
            foreach (var f in files) File.WriteAllText(Path.Combine(root, path, f), "x");
        }
        Dir(".step-4.tmp-deadbeef", "optimizer.safetensors");                  // a save killed half way
        Dir(".deleting-step-2-0badf00d", "optimizer.safetensors");             // a prune killed half way
        Dir(".step-3.old-12345678", TrainerState.FileName);                    // step-3 being replaced, nothing in its place
        Dir(".step-5.old-abcdef01", TrainerState.FileName);                    // step-5 replaced: the new one is there
        File.WriteAllText(Path.Combine(outDir, ".metrics.csv.tmp-0123abcd"), "step,epoch\n1,");
        File.WriteAllText(Path.Combine(outDir, "metrics.csv.tmp"), "step,epoch\n1,");   // older versions' temp name
        File.WriteAllText(Path.Combine(outDir, ".config.yaml.tmp-89abcdef"), "model:");
        File.WriteAllText(Path.Combine(outDir, ".keep"), "");                  // the user's: untouched
        File.WriteAllText(Path.Combine(outDir, "notes.tmp"), "");

        var done = RunOutput.RemoveLeftovers(outDir, store);

        Assert.Equal(7, done.Count);
        Assert.Contains(done, d => d.StartsWith("restored .step-3.old-12345678 as step-3", StringComparison.Ordinal));
        Assert.Equal([".keep", "checkpoints", "notes.tmp"], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(["step-3", "step-5"], Directory.GetFileSystemEntries(root).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal([3, 5], store.List().Select(c => c.Step));
    }

    [Fact]
    public void An_output_dir_is_locked_by_one_run_and_a_second_is_refused_naming_the_holder_until_released()
    {
        using var tmp = Paths.Temp();
        string outDir = tmp["run"];
        OutputDirLock.ThrowIfHeld(outDir);                 // nothing there yet: no error, nothing written
        Assert.False(Directory.Exists(outDir));
        using (var held = OutputDirLock.Acquire(outDir))
        {
            var e = Assert.Throws<InvalidOperationException>(() => OutputDirLock.Acquire(outDir));
            Assert.Contains($"output dir '{outDir}' is in use by another run (pid {Environment.ProcessId} on {Environment.MachineName}, started ", e.Message);
            Assert.DoesNotContain("\n", e.Message);
            Assert.Equal(e.Message, Assert.Throws<InvalidOperationException>(() => OutputDirLock.ThrowIfHeld(outDir)).Message);
        }
        OutputDirLock.ThrowIfHeld(outDir);
        using var again = OutputDirLock.Acquire(outDir);   // released on dispose (and by the OS when a holder dies)
    }

    [Fact]
    public void A_resume_accepts_changes_to_logging_and_cadence_and_refuses_changes_to_what_a_step_computes()
    {
        using var run = new TinyRun();
        string Snapshot(params string[] overrides) => ResumeCompatibility.Snapshot(TrainConfig.Load(run.ConfigPath, overrides));
        string saved = Snapshot();
        IReadOnlyList<ResumeCompatibility.Difference> Diff(params string[] overrides) => ResumeCompatibility.Compare(saved, "saved.yaml", Snapshot(overrides));

        Assert.Empty(Diff("training.log_every=7", "training.eval_every=3", "training.save_every=5", "output.keep_last=9",
            $"output.dir={run.Dir["elsewhere"]}", "training.gradient_checkpointing=true"));
        // One file, spelled relative or absolute, is the same file.
        string cwd = Environment.CurrentDirectory;
        Assert.Empty(Diff($"model.path={Path.GetRelativePath(cwd, run.Model)}"));

        var d = Diff("training.learning_rate=5e-4", "training.max_steps=20", "lora.r=8", "lora.target_modules=[q_proj]",
            "training.micro_batch_size=2", "training.gradient_accumulation_steps=2", "data.max_seq_len=48", "training.seed=2",
            "training.scheduler=linear", "training.warmup_steps=3", "lora.rslora=true", "data.packing=true");
        Assert.Equal(["data.max_seq_len", "data.packing", "lora.r", "lora.rslora", "lora.target_modules", "training.gradient_accumulation_steps",
            "training.learning_rate", "training.max_steps", "training.micro_batch_size", "training.scheduler", "training.seed", "training.warmup_steps"],
            d.Select(x => x.Key));
        Assert.Equal("training.learning_rate 0.001 -> 0.0005", d.Single(x => x.Key == "training.learning_rate").ToString());
        Assert.Equal("lora.target_modules [q_proj, v_proj] -> [q_proj]", d.Single(x => x.Key == "lora.target_modules").ToString());

        // The same path with other files behind it is another model (or other data).
        File.AppendAllText(run.Data, "{\"text\": \"one more row\"}\n");
        Assert.Equal(["data files"], Diff().Select(x => x.Key));
        Assert.StartsWith("data files changed since the checkpoint", Diff().Single().ToString());

        // A key the lists do not know is protected (default-deny): a saved config with an extra key differs.
        Assert.Equal(["training.some_new_key"], ResumeCompatibility.Compare(saved.Replace("training:\n", "training:\n  some_new_key: 1\n"), "saved.yaml", saved).Select(x => x.Key));
    }
    [Fact]
    public void A_stop_asked_for_while_the_model_loads_ends_before_the_first_step_and_saves_nothing()
    {
        // What SIGTERM during start-up amounts to: the token is already cancelled when the loop begins.
        using var run = new TinyRun(maxSteps: 4, saveEvery: 1);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var r = QLoraNet.Training.Recipes.LoraFinetuneRecipe.Run(TrainConfig.Load(run.ConfigPath), new QLoraNet.Training.Recipes.TrainOptions(null),
            NullObserver.Instance, cts.Token);
        Assert.Equal(TrainStop.Interrupted, r.Stop);
        Assert.Equal(0, r.StepsDone);
        Assert.Equal("interrupted before the first step; nothing was saved", r.Message);
        Assert.Empty(new CheckpointStore(run.OutDir, 2).List());
        Assert.False(Directory.Exists(Path.Combine(run.OutDir, RunOutput.FinalAdapterDir)));
        Assert.Empty(MetricsLog.Read(Path.Combine(run.OutDir, RunOutput.MetricsFile)));
    }
}
