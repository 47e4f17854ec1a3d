using System.Globalization;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// The checkpoints of a run, <c>{output}/checkpoints/step-N/</c>, each holding the adapter (peft format,
/// <c>adapter/</c>), the optimizer moments (<c>optimizer.safetensors</c>) and <see cref="TrainerState"/>.
/// A checkpoint is written into a hidden temporary directory and renamed into place only when complete, so a
/// kill at any moment leaves the previous checkpoints intact and never a partial one under a valid name.
/// Only the newest <c>keepLast</c> are kept, plus the one with the best validation loss.
/// </summary>
public sealed class CheckpointStore(string outputDir, int keepLast)
{
    const string Prefix = "step-";

    public string Root { get; } = Path.Combine(outputDir, "checkpoints");

    /// <summary>Test hook: called after each file is written into the temporary directory (simulates a kill).</summary>
    internal static Action<string>? AfterFileWritten;

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

    /// <summary>Writes checkpoint <paramref name="step"/>: <paramref name="write"/> fills a temporary directory,
    /// the state file goes in last, then one rename publishes it.</summary>
    public string Save(int step, TrainerState state, Action<string, Action<string>> write, int? bestStep)
    {
        Directory.CreateDirectory(Root);
        string final = PathFor(step);
        string staging = System.IO.Path.Combine(Root, $".{Prefix}{step}.tmp-{Guid.NewGuid():N}");
        try
        {
            Directory.CreateDirectory(staging);
            write(staging, file => AfterFileWritten?.Invoke(file));
            state.Save(staging);
            AfterFileWritten?.Invoke(System.IO.Path.Combine(staging, TrainerState.FileName));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true); // same step saved again (e.g. final save)
            Directory.Move(staging, final);
        }
        catch
        {
            try { Directory.Delete(staging, recursive: true); } catch (IOException) { }
            throw;
        }
        Prune(bestStep);
        return final;
    }

    void Prune(int? bestStep)
    {
        var all = List();
        foreach (var (step, path) in all.Take(Math.Max(0, all.Count - keepLast)))
            if (step != bestStep) Directory.Delete(path, recursive: true);
        // Leftovers of interrupted saves.
        foreach (var tmp in Directory.GetDirectories(Root, "." + Prefix + "*"))
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
    }
}
