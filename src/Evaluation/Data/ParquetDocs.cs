using Parquet.Serialization;

namespace QLoraNet.Evaluation.Data;

/// <summary>
/// Parquet files as the Hugging Face hub serves datasets (<c>test-00000-of-00001.parquet</c>), read with Parquet.Net
/// into rows with nested lists and structs intact. A file that is not Parquet (or uses an encoding Parquet.Net cannot
/// read) is a one-line error naming it.
/// </summary>
internal static class ParquetDocs
{
    public static List<Doc> Read(string path)
    {
        IList<Dictionary<string, object>> rows;
        try
        {
            using var stream = QLoraNet.Formats.UserFile.OpenRead(path, "task data file");   // a regular file (a FIFO would block)
            rows = ParquetSerializer.DeserializeUntypedAsync(stream).GetAwaiter().GetResult().Data;
        }
        // A damaged file fails anywhere inside Parquet.Net (its Thrift reader, decoders, index arithmetic), with whatever
        // exception that code meets: every one is the same user error. Only running out of memory is not.
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new TaskException($"{path}: not a readable Parquet file ({QLoraNet.Formats.SafeText.Clip(e.Message.Split('\n')[0], 160)})");
        }
        return rows.Select((r, i) =>
        {
            string where = $"{path} row {i}";
            try { return new Doc((Dictionary<string, object?>)PythonValues.Normalize(r)!, where); }
            catch (TaskException e) { throw new TaskException($"{where}: {e.Message}", e); }
        }).ToList();
    }
}
