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
        if (!Directory.Exists(resume)) throw new DirectoryNotFoundException($"--resume: checkpoint directory '{resume}' does not exist");
        if (!File.Exists(Path.Combine(resume, TrainerState.FileName)))
            throw new InvalidDataException($"--resume: '{resume}' is not a complete checkpoint (no {TrainerState.FileName}); use one of {store.Root}/step-N");
        return resume;
    }

    /// <summary>A new run never writes over an earlier run's checkpoints: they are resumed or kept.</summary>
    public static void GuardNewRun(string outDir, CheckpointStore store)
    {
        if (store.List().Count > 0 || Directory.Exists(Path.Combine(outDir, FinalAdapterDir)))
            throw new InvalidOperationException(
                $"output dir '{outDir}' holds an earlier run's checkpoints; pass --resume to continue it, or set output.dir to a new directory (or delete it)");
    }

    /// <summary>Writes the config the run actually uses (defaults and overrides resolved) as <see cref="ResolvedConfigFile"/>.</summary>
    public static void WriteResolvedConfig(string outDir, TrainConfig config) =>
        AtomicFile.WriteAllText(Path.Combine(outDir, ResolvedConfigFile), config.ToYaml());
}
