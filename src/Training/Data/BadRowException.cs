namespace QLoraNet.Training.Data;

/// <summary>A row that cannot become an example; skipped and counted when <c>data.skip_bad_rows</c> is on.</summary>
public sealed class BadRowException(string message) : Exception(message);
