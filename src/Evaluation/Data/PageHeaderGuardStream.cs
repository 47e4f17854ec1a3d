namespace QLoraNet.Evaluation.Data;

/// <summary>
/// A Parquet file's bytes as Parquet.Net reads them, whose <see cref="ReadByte"/> works only inside the page headers
/// <see cref="ParquetStructure"/> validated. Parquet.Net reads a column chunk's pages until it has the chunk's values,
/// so a page whose data decodes to fewer values than its header says sends it on to parse whatever follows the chunk
/// as a page header, where a varint running into the end of the file never ends (-1 reads as 0xFF). Its Thrift reader
/// is the only caller of ReadByte (page data is read in blocks), so refusing ReadByte outside a checked header turns
/// that into an error at once.
/// </summary>
internal sealed class PageHeaderGuardStream(byte[] bytes, (int Start, int End)[] headers) : MemoryStream(bytes, writable: false)
{
    public override int ReadByte()
    {
        long at = Position;
        int i = Array.BinarySearch(headers, ((int)Math.Min(at, int.MaxValue), int.MaxValue));   // the last header starting at or before
        if (i < 0) i = ~i - 1;
        if (i < 0 || at >= headers[i].End)
            throw new InvalidDataException($"a page header is read at byte {at}, where no column chunk has one (page data shorter than its header says?)");
        return base.ReadByte();
    }
}
