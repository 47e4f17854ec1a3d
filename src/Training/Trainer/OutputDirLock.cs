using System.Diagnostics;
using System.Globalization;

namespace QLoraNet.Training.Trainer;

/// <summary>
/// One run per output folder: an exclusive OS lock on <c>{output}/.train.lock</c>, held open for the whole run. The
/// lock is the operating system's (a FileStream with <see cref="FileShare.None"/>: flock(LOCK_EX) on Linux and macOS,
/// a share-mode lock on Windows), so it is released when the holder exits, however it exits: a killed run never
/// leaves the folder locked. The holder writes who it is (pid, host, start time) to <c>.train.lock.owner</c> so a
/// second run can say whom it met. The lock file itself is never deleted: deleting it on release would let a run
/// that opened the old file and one that creates a new one both hold "the" lock.
/// </summary>
public sealed class OutputDirLock : IDisposable
{
    public const string LockFile = ".train.lock";
    public const string OwnerFile = ".train.lock.owner";

    readonly FileStream _lock;
    readonly string _ownerPath;

    OutputDirLock(FileStream held, string ownerPath) => (_lock, _ownerPath) = (held, ownerPath);

    /// <summary>
    /// Takes the lock of <paramref name="outputDir"/> (creating the folder), or throws an
    /// <see cref="InvalidOperationException"/> of one line naming the folder and the holder's pid, host and start
    /// time. Never waits.
    /// </summary>
    public static OutputDirLock Acquire(string outputDir)
    {
        Directory.CreateDirectory(outputDir);
        string lockPath = Path.Combine(outputDir, LockFile), ownerPath = Path.Combine(outputDir, OwnerFile);
        FileStream held;
        try
        {
            held = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
        }
        catch (IOException) when (File.Exists(lockPath))
        {
            throw Busy(outputDir);
        }
        try
        {
            using var process = Process.GetCurrentProcess();
            string owner = string.Create(CultureInfo.InvariantCulture,
                $"pid {Environment.ProcessId} on {Environment.MachineName}, started {process.StartTime.ToUniversalTime():yyyy-MM-dd HH:mm:ss}Z");
            QLoraNet.Formats.AtomicFile.WriteAllText(ownerPath, owner + "\n");
        }
        catch
        {
            held.Dispose();
            throw;
        }
        return new OutputDirLock(held, ownerPath);
    }

    /// <summary>
    /// Throws as <see cref="Acquire"/> does when another run holds the lock, without taking it or writing anything
    /// (so checks that may refuse a run can come first and still name the real reason a busy folder cannot be used).
    /// </summary>
    public static void ThrowIfHeld(string outputDir)
    {
        string lockPath = Path.Combine(outputDir, LockFile);
        if (!File.Exists(lockPath)) return;
        try
        {
            using var probe = new FileStream(lockPath, FileMode.Open, FileAccess.Read, FileShare.None, 1, FileOptions.None);
        }
        catch (IOException) when (File.Exists(lockPath))
        {
            throw Busy(outputDir);
        }
    }

    static InvalidOperationException Busy(string outputDir) => new(
        $"output dir '{outputDir}' is in use by another run ({Holder(Path.Combine(outputDir, OwnerFile))}); wait for it to finish, stop it, or set output.dir to another directory");

    /// <summary>
    /// The holder as it described itself; a short, escaped line. The holder writes its note just after taking the
    /// lock, and a killed holder leaves a stale one behind: a note that is missing or names a process that no longer
    /// runs is read again for up to a second before it is reported as it is.
    /// </summary>
    static string Holder(string ownerPath)
    {
        string text = "";
        for (int attempt = 0; attempt < 20; attempt++)
        {
            // The note is one short line we wrote; read bounded and regular-only all the same (it sits in a user's folder).
            try { text = File.Exists(ownerPath) ? QLoraNet.Formats.UserFile.ReadLines(ownerPath, 4096, "lock note").FirstOrDefault().Text ?? "" : ""; }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException) { text = ""; }
            if (text.Length > 0 && IsRunning(text)) break;
            Thread.Sleep(50);
        }
        return text.Length > 0 ? QLoraNet.Formats.SafeText.Clip(text, 120) : "holder unknown";
    }

    /// <summary>Whether the "pid N on HOST" of a note is a live process (always true for another host's note).</summary>
    static bool IsRunning(string note)
    {
        var parts = note.Split(' ');
        if (parts.Length < 4 || parts[0] != "pid" || !int.TryParse(parts[1], out int pid)) return false;
        if (parts[3].TrimEnd(',') != Environment.MachineName) return true;
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>Releases the lock (the owner note goes first, while the lock is still held).</summary>
    public void Dispose()
    {
        try { File.Delete(_ownerPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _lock.Dispose();
    }
}
