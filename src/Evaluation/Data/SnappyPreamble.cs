namespace QLoraNet.Evaluation.Data;

/// <summary>
/// The uncompressed length a Snappy stream starts with ("The stream starts with the uncompressed length (up to a
/// maximum of 2^32 - 1), stored as a little-endian varint", google/snappy format_description.txt, "1. Preamble").
/// Parquet.Net's Snappy decoder (Snappier) allocates that many bytes before it decodes any, whatever the page header
/// says: a 1 KB file claiming 2 GiB allocated 2 GiB. So <see cref="ParquetStructure"/> counts it in its budget.
/// </summary>
internal static class SnappyPreamble
{
    /// <summary>The length at the start of <paramref name="stream"/>; null when no varint ends within its 5 bytes
    /// (the decoder then fails before allocating).</summary>
    public static long? Length(ReadOnlySpan<byte> stream)
    {
        long value = 0;
        for (int i = 0; i < 5 && i < stream.Length; i++)
        {
            value |= (long)(stream[i] & 0x7F) << (7 * i);
            if ((stream[i] & 0x80) == 0) return value;
        }
        return null;
    }
}
