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

    /// <summary>The holder as it described itself; a short, escaped line.</summary>
    static string Holder(string ownerPath)
    {
        try
        {
            string text = File.Exists(ownerPath) ? File.ReadLines(ownerPath).FirstOrDefault() ?? "" : "";
            return text.Length > 0 ? QLoraNet.Formats.SafeText.Clip(text, 120) : "holder unknown";
        }
        catch (IOException)
        {
            return "holder unknown";
        }
    }

    /// <summary>Releases the lock (the owner note goes first, while the lock is still held).</summary>
    public void Dispose()
    {
        try { File.Delete(_ownerPath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        _lock.Dispose();
    }
}
