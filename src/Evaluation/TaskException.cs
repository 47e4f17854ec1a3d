namespace QLoraNet.Evaluation;

/// <summary>
/// A bad task file, template, data file or row: one line naming where (file:line, or the row's file:line) and what
/// to do. The CLI prints the message as is and exits non-zero.
/// </summary>
public sealed class TaskException : Exception
{
    public TaskException(string message) : base(message) { }

    public TaskException(string message, Exception inner) : base(message, inner) { }

    /// <summary>
    /// Runs <paramref name="read"/>, a read of <paramref name="path"/> from disk. The bounded readers' refusals
    /// (<see cref="InvalidDataException"/>: too large, a line too long, not UTF-8, not a regular file; already one line
    /// naming the file) and I/O errors become a TaskException like every other bad task input, so the callers that
    /// handle bad task inputs (the catalog skipping an unreadable sibling of a group file, training's eval config
    /// naming its key) see one type.
    /// </summary>
    internal static T Reading<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            string message = e.Message.Split('\n')[0].Trim();
            throw new TaskException(message.Contains(path, StringComparison.Ordinal) ? message : $"{path}: {message}", e);
        }
    }
}
