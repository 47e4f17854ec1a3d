using QLoraNet.Evaluation.Config;

namespace QLoraNet.Evaluation.Data;

/// <summary>
/// Finds the local files of a task's split. Nothing is downloaded: the data is a local copy the user made (e.g.
/// <c>huggingface-cli download allenai/ai2_arc --repo-type dataset --local-dir data/arc</c>).
/// <list type="number">
/// <item>A <c>--task-data NAME=PATH</c> override, else <c>dataset_kwargs.data_files</c> (split to files), else
/// <c>dataset_path</c> gives the place. Relative paths resolve from the current directory.</item>
/// <item>A file serves every split the task reads.</item>
/// <item>In a directory, the split's files are looked for in <c>DIR/&lt;dataset_name&gt;</c>, <c>DIR/data</c> and
/// <c>DIR</c> (the first that has any): <c>SPLIT.ext</c>, <c>SPLIT-*.ext</c> (the hub's
/// <c>test-00000-of-00001.parquet</c>) or <c>SPLIT/*.ext</c> (the hub's converted layout), ext one of
/// <see cref="DocFiles.Extensions"/>; several files are read in name order.</item>
/// </list>
/// </summary>
public static class SplitFiles
{
    public static IReadOnlyList<string> Find(TaskConfig task, string split, string? overridePath)
    {
        if (overridePath is null && task.DataFiles is { } files)
            return files.TryGetValue(split, out var list) ? list
                : throw new TaskException($"{task.SourceFile}: task '{task.Name}' reads split '{split}', but dataset_kwargs.data_files names only {string.Join(", ", files.Keys)}");

        string root = overridePath ?? task.DatasetPath!;
        if (File.Exists(root)) return [root];
        if (!Directory.Exists(root))
            throw new TaskException(overridePath != null
                ? $"--task-data {task.Name}={root}: no such file or directory"
                : $"task '{task.Name}' reads its data from '{root}', which is not a local file or directory; pass --task-data {task.Name}=DIR with a local copy"
                  + (root.Contains('/') && !root.StartsWith('.') && !Path.IsPathRooted(root) ? $" of the hub dataset {root} (huggingface-cli download {root} --repo-type dataset --local-dir DIR)" : ""));

        var dirs = new List<string>();
        if (task.DatasetName is { } name) dirs.Add(Path.Combine(root, name));
        dirs.Add(Path.Combine(root, "data"));
        dirs.Add(root);
        foreach (string dir in dirs.Where(Directory.Exists))
        {
            var found = Directory.EnumerateFiles(dir)
                .Where(f => IsData(f) && (Stem(f) == split || Path.GetFileName(f).StartsWith(split + "-", StringComparison.Ordinal)))
                .Concat(Directory.Exists(Path.Combine(dir, split)) ? Directory.EnumerateFiles(Path.Combine(dir, split)).Where(IsData) : [])
                .Order(StringComparer.Ordinal).ToList();
            if (found.Count > 0) return found;
        }
        throw new TaskException($"task '{task.Name}': no file for split '{split}' under {root} (looked for {split}.jsonl|json|csv|parquet, {split}-*.parquet and {split}/*.parquet in {string.Join(", ", dirs)})");
    }

    static bool IsData(string f) => DocFiles.Extensions.Contains(Path.GetExtension(f).ToLowerInvariant());
    static string Stem(string f) => Path.GetFileNameWithoutExtension(f);
}
