using System.Text;

namespace QLoraNet.Formats;

/// <summary>
/// Writing a file that no reader, and no crash, ever sees half written: the content goes to a hidden temporary
/// sibling (<c>.NAME.tmp-XXXXXXXX</c>, same directory, so the rename stays on one file system), is flushed to disk,
/// and one rename publishes it over any previous version. On failure the temporary file is deleted and the previous
/// file is untouched. Every writer of this project that publishes a file goes through here.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/> with the bytes <paramref name="write"/> puts into the stream.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string target = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, TemporaryName(Path.GetFileName(target)));
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, target, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 (no byte-order mark), as File.WriteAllText does.</summary>
    public static void WriteAllText(string path, string text) => Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)));

    /// <summary>The hidden temporary name for <paramref name="name"/>: <c>.NAME.tmp-XXXXXXXX</c>.</summary>
    public static string TemporaryName(string name) => $".{name}.tmp-{Guid.NewGuid().ToString("N")[..8]}";

    /// <summary>Whether <paramref name="name"/> is a temporary name (a leftover of an interrupted write).</summary>
    public static bool IsTemporaryName(string name) => name.StartsWith('.') && name.Contains(".tmp-", StringComparison.Ordinal);
}
