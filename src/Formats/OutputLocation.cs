namespace QLoraNet.Formats;

/// <summary>
/// Where a verb writes its result (`merge`, `quantize`, `export`): all of them refuse a missing parent folder with
/// the same one line, before any work, rather than one creating a whole tree from a typo while the others refuse.
/// </summary>
public static class OutputLocation
{
    /// <summary>Refuses <paramref name="path"/> whose parent folder does not exist, naming <paramref name="option"/>
    /// and the missing parent.</summary>
    public static void RequireParent(string path, string option = "--out")
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        string? parent = Path.GetDirectoryName(full);
        if (parent is not null && !Directory.Exists(parent))
            throw new DirectoryNotFoundException($"{option} '{path}': parent directory '{parent}' does not exist; create it first");
    }
}
