namespace QLoraNet.Evaluation.Config;

/// <summary>
/// A task or group YAML to read: its text, the name errors give it (a path, or <c>builtin:arc_easy.yaml</c>) and how
/// to find the files its <c>include:</c> names (beside it on disk, or beside it among the built-ins).
/// </summary>
public sealed record TaskSourceFile(string DisplayPath, string Text, Func<string, TaskSourceFile?> Resolve)
{
    /// <summary>A task YAML is a few KB; a larger file is not one (read bounded, issue 11).</summary>
    const long MaxFileBytes = 1 << 20;

    /// <summary>A task file on disk; includes resolve from its directory.</summary>
    public static TaskSourceFile FromDisk(string path)
    {
        if (!File.Exists(path)) throw new TaskException($"task file '{path}' does not exist");
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string text = TaskException.Reading(path, () => QLoraNet.Formats.UserFile.ReadText(path, MaxFileBytes, "task file"));
        return new TaskSourceFile(path, text, name =>
        {
            string p = Path.Combine(dir, name);
            return File.Exists(p) ? FromDisk(Path.GetRelativePath(Environment.CurrentDirectory, p)) : null;
        });
    }
}
