using System.Text.RegularExpressions;
using QLoraNet.Formats;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// Removes checkpoints so that a kill at any moment never leaves one that is listed but broken: a checkpoint is first
/// made invisible by one atomic rename of <c>step-N</c> to <c>.deleting-step-N-XXXXXXXX</c> (a name
/// <see cref="CheckpointStore.List"/> never matches), and only then are its files deleted. A kill after the rename
/// leaves a hidden folder that the next run's <see cref="RemoveLeftovers"/> deletes; a kill before it leaves the
/// checkpoint whole. Deleting <c>trainer_state.json</c> (the completeness mark) first would also hide it, but a kill
/// between that and the rest would leave a half-deleted folder under a valid name.
/// </summary>
/// <param name="onEvent">called with each path just before it is renamed or deleted (progress; tests stop here
/// as a kill would).</param>
public sealed partial class CheckpointPruner(Action<string>? onEvent = null)
{
    public const string DeletingPrefix = ".deleting-";

    /// <summary>Deletes <paramref name="checkpoint"/>: hidden by a rename first, then its files.</summary>
    public void Delete(string checkpoint)
    {
        string root = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(checkpoint))!;
        string hidden = Path.Combine(root, $"{DeletingPrefix}{Path.GetFileName(checkpoint)}-{Guid.NewGuid().ToString("N")[..8]}");
        onEvent?.Invoke(checkpoint);
        Directory.Move(checkpoint, hidden);
        DeleteTree(hidden);
    }

    /// <summary>
    /// Leftovers of interrupted writes and prunes in <paramref name="dir"/> (the checkpoints folder or the run's
    /// output folder): hidden <c>.deleting-*</c> folders and <see cref="AtomicFile"/>/<see cref="AtomicDirectory"/>
    /// temporaries (<c>.NAME.tmp-XXXXXXXX</c>) are deleted; a <c>.NAME.old-XXXXXXXX</c> folder (NAME being replaced
    /// by a new save when the kill came) is renamed back when nothing took its place, else deleted. Only a run
    /// holding the output folder's lock may call this: another run's staging folder looks the same.
    /// Returns one entry per leftover, saying what was done.
    /// </summary>
    public IReadOnlyList<string> RemoveLeftovers(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        var done = new List<string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries(dir).ToList())
        {
            string name = Path.GetFileName(entry);
            var m = Leftover().Match(name);
            if (!m.Success) continue;
            string original = Path.Combine(dir, m.Groups["name"].Value);
            if (m.Groups["kind"].Value == "old" && Directory.Exists(entry) && !Path.Exists(original))
            {
                Directory.Move(entry, original);
                done.Add($"restored {name} as {m.Groups["name"].Value}");
                continue;
            }
            if (Directory.Exists(entry)) DeleteTree(entry);
            else File.Delete(entry);
            done.Add($"removed {name}");
        }
        return done;
    }

    /// <summary>.deleting-NAME-XXXXXXXX, or .NAME.tmp-XXXXXXXX / .NAME.old-XXXXXXXX (the names AtomicFile and
    /// AtomicDirectory give their temporaries).</summary>
    [GeneratedRegex(@"^(?:\.deleting-(?<name>.+)-(?<kind>)[0-9a-f]{8}|\.(?<name>.+)\.(?<kind>tmp|old)-[0-9a-f]{8})$")]
    private static partial Regex Leftover();

    /// <summary>Files first, then folders, deepest first, each reported before it goes.</summary>
    void DeleteTree(string dir)
    {
        foreach (var file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).ToList())
        {
            onEvent?.Invoke(file);
            File.Delete(file);
        }
        foreach (var sub in Directory.EnumerateDirectories(dir, "*", SearchOption.AllDirectories).OrderByDescending(d => d.Length).ToList())
            Directory.Delete(sub);
        Directory.Delete(dir);
    }
}
