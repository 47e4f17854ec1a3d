using System.Buffers.Binary;
using System.Text;
using QLoraNet.Evaluation.Data;
using static QLoraNet.Evaluation.Data.ThriftType;

namespace QLoraNet.Tests.Evaluation;

/// <summary>Thrift compact-protocol bytes written by hand (apache/thrift doc/specs/thrift-compact-protocol.md), so a
/// test can put any field, count or length anywhere.</summary>
public sealed class CompactWriter
{
    readonly List<byte> bytes = [];
    readonly Stack<int> outer = new();
    int last;

    public int Position => bytes.Count;
    public byte[] ToArray() => bytes.ToArray();

    /// <summary>A field header: the short form when the id is 1 to 15 above the last one, else the long form.</summary>
    internal CompactWriter Field(int id, ThriftType type)
    {
        int delta = id - last;
        if (delta is > 0 and <= 15) bytes.Add((byte)(delta << 4 | (int)type));
        else
        {
            bytes.Add((byte)type);
            Varint(ZigZag(id));
        }
        last = id;
        return this;
    }

    /// <summary>Starts a struct's fields (a struct field's value, or a list's struct element).</summary>
    public CompactWriter Begin()
    {
        outer.Push(last);
        last = 0;
        return this;
    }

    /// <summary>The stop field.</summary>
    public CompactWriter End()
    {
        bytes.Add(0);
        last = outer.Pop();
        return this;
    }

    /// <summary>An i16, i32 or i64: ZigZag, then varint.</summary>
    public CompactWriter Int(long value) => Varint(ZigZag(value));

    public CompactWriter Binary(string text)
    {
        var b = Encoding.UTF8.GetBytes(text);
        Varint((ulong)b.Length);
        bytes.AddRange(b);
        return this;
    }

    internal CompactWriter ListHeader(ThriftType element, long count)
    {
        if (count < 15) bytes.Add((byte)((int)count << 4 | (int)element));
        else
        {
            bytes.Add((byte)(0xF0 | (int)element));
            Varint((ulong)count);
        }
        return this;
    }

    public CompactWriter Varint(ulong value)
    {
        while (value >= 0x80)
        {
            bytes.Add((byte)(value | 0x80));
            value >>= 7;
        }
        bytes.Add((byte)value);
        return this;
    }

    public CompactWriter Raw(params byte[] raw)
    {
        bytes.AddRange(raw);
        return this;
    }

    static ulong ZigZag(long v) => (ulong)((v << 1) ^ (v >> 63));
}

/// <summary>
/// A one-column Parquet file written by hand (apache/parquet-format README "File format", parquet.thrift): a required
/// INT32 column "n", one row group per entry of <see cref="Groups"/>, each one uncompressed data page, PLAIN, or with
/// <see cref="Dictionary"/> a PLAIN dictionary page and RLE_DICTIONARY indexes. The knobs put a damage or an extra
/// field in one place (the first chunk's page, the first chunk's metadata); after <see cref="Build"/> the offsets
/// tell a test where things are.
/// </summary>
public sealed class HandBuiltParquet
{
    public int[] Values { init => Groups = [value]; }
    public int[][] Groups { get; init; } = [[1, 2, 3]];
    public bool Dictionary { get; init; }
    public Action<CompactWriter>? FileMetaDataExtra { get; init; }
    public Action<CompactWriter>? ColumnMetaDataExtra { get; init; }
    public Action<CompactWriter>? PageHeaderExtra { get; init; }
    public int? CompressedPageSize { get; init; }
    public int? PageNumValues { get; init; }
    public long? NumValues { get; init; }
    public long? TotalCompressedSize { get; init; }
    public uint? FooterLength { get; init; }
    /// <summary>Groups of one child each between the schema's root and the column.</summary>
    public int ExtraSchemaGroups { get; init; }
    /// <summary>Bytes of the first data page's data left out, its header unchanged but for the page sizes.</summary>
    public int DataBytesMissing { get; init; }

    public int PageStart { get; private set; }
    public int ChunkEnd { get; private set; }
    public int FooterStart { get; private set; }
    public int FooterEnd { get; private set; }
    /// <summary>Where <see cref="FileMetaDataExtra"/> and <see cref="ColumnMetaDataExtra"/> began writing (file offsets).</summary>
    public int FileMetaDataExtraAt { get; private set; }
    public int ColumnMetaDataExtraAt { get; private set; }

    sealed record ChunkAt(int Start, int DictionaryStart, int DataStart, int End, int Values);

    public byte[] Build()
    {
        var file = new List<byte>("PAR1"u8.ToArray());
        var chunks = new List<ChunkAt>();
        foreach (var values in Groups)
        {
            bool first = chunks.Count == 0;
            int start = file.Count, dictionaryStart = 0;
            byte[] data;
            if (Dictionary)
            {
                // The dictionary page: the distinct values, PLAIN; the data page: bit width 8, then each index as an RLE
                // run of one (header = count << 1, then the value in one byte), parquet-format Encodings.md.
                var distinct = values.Distinct().ToArray();
                var plain = distinct.SelectMany(BitConverter.GetBytes).ToArray();
                dictionaryStart = file.Count;
                file.AddRange(new CompactWriter().Begin()
                    .Field(1, I32).Int(2).Field(2, I32).Int(plain.Length).Field(3, I32).Int(plain.Length)   // DICTIONARY_PAGE
                    .Field(7, Struct).Begin().Field(1, I32).Int(distinct.Length).Field(2, I32).Int(0).End()   // num_values, PLAIN
                    .End().ToArray());
                file.AddRange(plain);
                data = [8, .. values.SelectMany(v => new byte[] { 2, (byte)Array.IndexOf(distinct, v) })];
            }
            else data = values.SelectMany(BitConverter.GetBytes).ToArray();
            if (first) data = data[..^DataBytesMissing];

            int dataStart = file.Count;
            var page = new CompactWriter().Begin()
                .Field(1, I32).Int(0)   // type DATA_PAGE
                .Field(2, I32).Int(data.Length)   // uncompressed_page_size
                .Field(3, I32).Int(first ? CompressedPageSize ?? data.Length : data.Length)   // compressed_page_size
                .Field(5, Struct).Begin()   // data_page_header: num_values, encoding PLAIN or RLE_DICTIONARY, levels RLE
                    .Field(1, I32).Int(first ? PageNumValues ?? values.Length : values.Length).Field(2, I32).Int(Dictionary ? 8 : 0)
                    .Field(3, I32).Int(3).Field(4, I32).Int(3)
                .End();
            if (first) PageHeaderExtra?.Invoke(page);
            file.AddRange(page.End().ToArray());
            file.AddRange(data);
            chunks.Add(new ChunkAt(start, dictionaryStart, dataStart, file.Count, values.Length));
        }
        PageStart = chunks[0].Start;
        ChunkEnd = chunks[0].End;
        FooterStart = file.Count;

        var footer = new CompactWriter().Begin()
            .Field(1, I32).Int(1)   // version
            .Field(2, List).ListHeader(Struct, 2 + ExtraSchemaGroups)   // schema
                .Begin().Field(4, Binary).Binary("schema").Field(5, I32).Int(1).End();
        for (int i = 0; i < ExtraSchemaGroups; i++) footer.Begin().Field(4, Binary).Binary("g").Field(5, I32).Int(1).End();
        footer.Begin().Field(1, I32).Int(1).Field(3, I32).Int(0).Field(4, Binary).Binary("n").End()   // INT32, REQUIRED
            .Field(3, I64).Int(Groups.Sum(g => g.Length))   // num_rows
            .Field(4, List).ListHeader(Struct, chunks.Count);   // row_groups
        foreach (var chunk in chunks)
        {
            bool first = chunk == chunks[0];
            long size = chunk.End - chunk.Start;
            footer.Begin()
                .Field(1, List).ListHeader(Struct, 1)   // columns
                    .Begin()
                    .Field(2, I64).Int(chunk.Start)   // file_offset
                    .Field(3, Struct).Begin()   // meta_data
                        .Field(1, I32).Int(1).Field(2, List).ListHeader(I32, Dictionary ? 3 : 1).Int(0)   // type INT32, encodings
                        .Raw(Dictionary ? [0x06, 0x10] : [])   // RLE (3), RLE_DICTIONARY (8)
                        .Field(3, List).ListHeader(Binary, 1).Binary("n").Field(4, I32).Int(0)   // path_in_schema, codec UNCOMPRESSED
                        .Field(5, I64).Int(first ? NumValues ?? chunk.Values : chunk.Values)
                        .Field(6, I64).Int(size).Field(7, I64).Int(first ? TotalCompressedSize ?? size : size)
                        .Field(9, I64).Int(chunk.DataStart);   // data_page_offset
            if (Dictionary) footer.Field(11, I64).Int(chunk.DictionaryStart);   // dictionary_page_offset
            if (first)
            {
                ColumnMetaDataExtraAt = FooterStart + footer.Position;
                ColumnMetaDataExtra?.Invoke(footer);
            }
            footer.End().End()   // meta_data, the column chunk
                .Field(2, I64).Int(size).Field(3, I64).Int(chunk.Values)   // total_byte_size, num_rows
                .End();   // the row group
        }
        FileMetaDataExtraAt = FooterStart + footer.Position;
        FileMetaDataExtra?.Invoke(footer);
        footer.End();

        file.AddRange(footer.ToArray());
        FooterEnd = file.Count;
        var length = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(length, FooterLength ?? (uint)(FooterEnd - FooterStart));
        file.AddRange(length);
        file.AddRange("PAR1"u8.ToArray());
        return file.ToArray();
    }
}
