using QLoraNet.Formats;
using QLoraNet.Training.Config;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The layout of a run's output directory (<c>output.dir</c>) and the rules around it: the resolved config, the
/// metrics, the loss curve, the final adapter and <c>checkpoints/</c> (<see cref="CheckpointStore"/>); a new run never
/// writes over an earlier run's checkpoints, and <c>--resume</c> names a complete checkpoint.
/// </summary>
public static class RunOutput
{
    public const string FinalAdapterDir = "final";
    public const string ResolvedConfigFile = "config.yaml";
    public const string MetricsFile = "metrics.csv";
    public const string LossCurveFile = "loss.png";

    /// <summary>
    /// The checkpoint to resume from: null for a new run (<paramref name="resume"/> null), the newest complete one
    /// for "latest", else the directory given, which must be a complete checkpoint.
    /// </summary>
    public static string? ResolveResume(string? resume, CheckpointStore store)
    {
        if (resume is null) return null;
        if (resume == "latest")
            return store.Latest() ?? throw new InvalidOperationException($"--resume: no complete checkpoint under {store.Root}; start without --resume");
        if (!Directory.Exists(resume)) throw new DirectoryNotFoundException($"--resume-from: checkpoint directory '{resume}' does not exist");
        if (!File.Exists(Path.Combine(resume, TrainerState.FileName)))
            throw new InvalidDataException($"--resume-from: '{resume}' is not a complete checkpoint (no {TrainerState.FileName}); use one of {store.Root}/step-N");
        return resume;
    }

    /// <summary>A new run never writes over an earlier run's checkpoints: they are resumed or kept.</summary>
    public static void GuardNewRun(string outDir, CheckpointStore store)
    {
        if (store.List().Count > 0 || Directory.Exists(Path.Combine(outDir, FinalAdapterDir)))
            throw new InvalidOperationException(
                $"output dir '{outDir}' holds an earlier run's checkpoints; pass --resume to continue it, or set output.dir to a new directory (or delete it)");
    }

    /// <summary>
    /// Writes the config the run actually uses (defaults and overrides resolved). A new run writes
    /// <see cref="ResolvedConfigFile"/>; a resume never overwrites it (it describes the checkpoints beside it): one
    /// that continues with accepted changes records its config as <c>config.resume-STEP.yaml</c> (STEP = the
    /// checkpoint's step) and returns that path; otherwise nothing is written (unless config.yaml is missing).
    /// </summary>
    public static string? WriteResolvedConfig(string outDir, TrainConfig config, int? resumedStep = null, bool withChanges = false)
    {
        string original = Path.Combine(outDir, ResolvedConfigFile);
        if (resumedStep is null || !File.Exists(original))
        {
            AtomicFile.WriteAllText(original, config.ToYaml());
            if (resumedStep is null) return original;
        }
        if (!withChanges) return null;
        string path = Path.Combine(outDir, ResumeConfigFile(resumedStep.Value));
        AtomicFile.WriteAllText(path, config.ToYaml());
        return path;
    }

    /// <summary>config.resume-STEP.yaml: the config a resume from checkpoint STEP continued with, changes accepted.</summary>
    public static string ResumeConfigFile(int step) => $"config.resume-{step}.yaml";

    /// <summary>
    /// Leftovers of an earlier run's interrupted writes in the output folder and its checkpoints (see
    /// <see cref="CheckpointPruner.RemoveLeftovers"/>), and a partial <c>metrics.csv.tmp</c> of older versions.
    /// Only under the output folder's lock. Returns what was done, for the log.
    /// </summary>
    public static IReadOnlyList<string> RemoveLeftovers(string outDir, CheckpointStore store)
    {
        var done = new List<string>(new CheckpointPruner().RemoveLeftovers(outDir));
        done.AddRange(store.RemoveLeftovers().Select(d => $"{d} in {store.Root}"));
        string legacy = Path.Combine(outDir, MetricsFile + ".tmp");
        if (File.Exists(legacy))
        {
            File.Delete(legacy);
            done.Add($"removed {MetricsFile}.tmp");
        }
        return done;
    }
}
