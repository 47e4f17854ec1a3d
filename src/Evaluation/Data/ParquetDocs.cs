using Parquet.Serialization;
using QLoraNet.Formats;

namespace QLoraNet.Evaluation.Data;

/// <summary>
/// Parquet files as the Hugging Face hub serves datasets (<c>test-00000-of-00001.parquet</c>), read with Parquet.Net
/// into rows with nested lists and structs intact. A file that is not Parquet (or uses an encoding Parquet.Net cannot
/// read) is a one-line error naming it. Parquet.Net trusts the file's counts and offsets (a damaged footer made it
/// loop practically forever), so it only sees a file <see cref="ParquetStructure"/> found well formed, through a
/// stream that lets it parse page headers only where that check found them (<see cref="PageHeaderGuardStream"/>).
/// </summary>
internal static class ParquetDocs
{
    /// <summary>Bound for a file from disk, as for JSON task data; the file is read whole, once.</summary>
    const long MaxFileBytes = 1L << 30;

    public static List<Doc> Read(string path)
    {
        // A regular file (a FIFO would block) of at most MaxFileBytes; its errors name it.
        var bytes = TaskException.Reading(path, () => UserFile.ReadBytes(path, MaxFileBytes, "task data file"));
        IList<Dictionary<string, object>> rows;
        try
        {
            var pageHeaders = ParquetStructure.Check(bytes);
            using var stream = new PageHeaderGuardStream(bytes, pageHeaders);
            rows = ParquetSerializer.DeserializeUntypedAsync(stream).GetAwaiter().GetResult().Data;
        }
        // A damaged file fails in our check or anywhere inside Parquet.Net (its Thrift reader, decoders, index
        // arithmetic), with whatever exception that code meets: every one is the same user error. Only running out of
        // memory is not.
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new TaskException($"{path}: not a readable Parquet file ({SafeText.Clip(e.Message.Split('\n')[0], 160)})", e);
        }
        return rows.Select((r, i) =>
        {
            string where = $"{path} row {i}";
            try { return new Doc((Dictionary<string, object?>)PythonValues.Normalize(r)!, where); }
            catch (TaskException e) { throw new TaskException($"{where}: {e.Message}", e); }
        }).ToList();
    }
}
