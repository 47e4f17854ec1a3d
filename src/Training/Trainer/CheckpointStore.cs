using System.Globalization;
using QLoraNet.Formats;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The checkpoints of a run, <c>{output}/checkpoints/step-N/</c>, each holding what <see cref="TrainingCheckpoint"/>
/// writes (adapter, optimizer moments) and <see cref="TrainerState"/>. A checkpoint is written into a hidden
/// staging directory and renamed into place only when complete (<see cref="AtomicDirectory"/>), so a kill at any
/// moment leaves the previous checkpoints intact and never a partial one under a valid name.
/// Only the newest <c>keepLast</c> are kept, plus the one with the best validation loss; older ones are removed by
/// <see cref="CheckpointPruner"/>, which hides a checkpoint before deleting its files. Each checkpoint also holds
/// <see cref="ConfigFile"/>, the resolved config it was trained under, which a resume compares with its own.
/// </summary>
/// <param name="outputDir">the run's output directory.</param>
/// <param name="keepLast">how many of the newest checkpoints to keep.</param>
/// <param name="onFileWritten">called with each file or directory as it is completed in the staging directory
/// (progress; a throwing callback aborts the save as a kill would).</param>
/// <param name="onPruning">called with each path pruning is about to rename or delete (a throwing callback stops the
/// prune there, as a kill would).</param>
/// <param name="configYaml">the run's resolved config, written into each checkpoint as <see cref="ConfigFile"/>; null = none.</param>
public sealed class CheckpointStore(string outputDir, int keepLast, Action<string>? onFileWritten = null,
    Action<string>? onPruning = null, string? configYaml = null)
{
    const string Prefix = "step-";

    /// <summary>The resolved config a checkpoint was trained under (see <see cref="ResumeCompatibility"/>).</summary>
    public const string ConfigFile = "config.yaml";

    readonly CheckpointPruner _pruner = new(onPruning);

    public string Root { get; } = Path.Combine(outputDir, "checkpoints");

    public string PathFor(int step) => Path.Combine(Root, Prefix + step.ToString(CultureInfo.InvariantCulture));

    /// <summary>Complete checkpoints, oldest first.</summary>
    public IReadOnlyList<(int Step, string Path)> List()
    {
        if (!Directory.Exists(Root)) return [];
        return Directory.GetDirectories(Root, Prefix + "*")
            .Select(d => (ok: int.TryParse(System.IO.Path.GetFileName(d)[Prefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out int s), step: s, path: d))
            .Where(x => x.ok && File.Exists(System.IO.Path.Combine(x.path, TrainerState.FileName)))
            .OrderBy(x => x.step)
            .Select(x => (x.step, x.path))
            .ToList();
    }

    public string? Latest() => List().LastOrDefault().Path;

    /// <summary>Writes checkpoint <paramref name="step"/>: <paramref name="write"/> fills the staging directory
    /// (reporting each completed file through its second argument), the state file goes in last, then one rename
    /// publishes it (replacing the same step saved before, e.g. by the final save).</summary>
    public string Save(int step, TrainerState state, Action<string, Action<string>> write, int? bestStep)
    {
        string final = PathFor(step);
        AtomicDirectory.Write(final, staging =>
        {
            write(staging, file => onFileWritten?.Invoke(file));
            if (configYaml is not null) File.WriteAllText(System.IO.Path.Combine(staging, ConfigFile), configYaml);
            state.Save(staging);
            onFileWritten?.Invoke(System.IO.Path.Combine(staging, TrainerState.FileName));
        });
        Prune(bestStep);
        return final;
    }

    /// <summary>Removes leftovers of interrupted saves and prunes (see <see cref="CheckpointPruner.RemoveLeftovers"/>);
    /// only under the output folder's lock. Returns what was done.</summary>
    public IReadOnlyList<string> RemoveLeftovers() => _pruner.RemoveLeftovers(Root);

    void Prune(int? bestStep)
    {
        var all = List();
        foreach (var (step, path) in all.Take(Math.Max(0, all.Count - keepLast)))
            if (step != bestStep) _pruner.Delete(path);
    }
}
