namespace QLoraNet.Formats;

/// <summary>
/// Writing a directory that readers see complete or not at all: the caller fills a hidden staging directory beside
/// the target (<see cref="AtomicFile.TemporaryName"/>), then a rename publishes it. Directory.Move cannot overwrite,
/// so an existing target is first renamed aside and deleted after the swap: a reader sees the old directory or the
/// new one, never a mix. On failure the staging directory is deleted and the target is untouched.
/// </summary>
public static class AtomicDirectory
{
    /// <summary>Creates the staging directory, lets <paramref name="fill"/> write into it, then publishes it as
    /// <paramref name="target"/> (replacing an existing one).</summary>
    public static void Write(string target, Action<string> fill)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(target));
        string parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        string staging = Path.Combine(parent, AtomicFile.TemporaryName(Path.GetFileName(full)));
        try
        {
            Directory.CreateDirectory(staging);
            fill(staging);
            Publish(staging, full);
        }
        catch
        {
            try { if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Moves the complete directory <paramref name="staging"/> to <paramref name="target"/>, replacing an existing one.</summary>
    static void Publish(string staging, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(staging, target);
            return;
        }
        string old = Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.old-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.Move(target, old);
        Directory.Move(staging, target);
        Directory.Delete(old, recursive: true);
    }
}
