namespace QLoraNet.Evaluation;

/// <summary>
/// A bad task file, template, data file or row: one line naming where (file:line, or the row's file:line) and what
/// to do. The CLI prints the message as is and exits non-zero.
/// </summary>
public sealed class TaskException(string message) : Exception(message);
