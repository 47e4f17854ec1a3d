using System.Buffers.Binary;

namespace QLoraNet.Evaluation.Data;

/// <summary>
/// Checks that a Parquet file is well formed before Parquet.Net reads it. Parquet.Net 6.1.0 trusts what a file says,
/// and nothing of ours can stop it once it runs: on a damaged footer it looped practically forever (a list of 2^31
/// booleans is "skipped" 2^31 times without reading a byte; a varint read past the end of its buffer never ends, -1
/// reading as 0xFF), and it sizes buffers by counts it reads. So a file must pass this first, which costs O(file
/// size) whatever the file claims. The layout is apache/parquet-format README.md ("File format"); the structs are
/// parquet.thrift's.
/// <list type="number">
/// <item>Layout: "PAR1" at both ends, the footer's 4-byte little-endian length before the last, the footer inside.</item>
/// <item>The footer (FileMetaData) is a well-formed Thrift struct that Parquet.Net reads as we do
/// (<see cref="ThriftCompactWalker"/> with <see cref="ParquetThriftShapes"/>); the schema nests at most
/// <see cref="MaxSchemaDepth"/> deep (Parquet.Net recurses per level) and has at most <see cref="MaxSchemaElements"/>
/// elements.</item>
/// <item>Each column chunk's bytes, from its first page (found as Parquet.Net finds it) for total_compressed_size
/// bytes, lie between the leading magic and the footer, and a row group has no more rows than any of its columns has
/// values.</item>
/// <item>Read as Parquet.Net reads them, until its data pages hold its num_values, a chunk's pages are each a
/// well-formed PageHeader followed by its compressed_page_size bytes, all before the next chunk (or the footer)
/// begins, and hold exactly num_values.</item>
/// <item>What Parquet.Net sizes buffers by (the values of every chunk and dictionary, the uncompressed bytes of every
/// page, the length a Snappy page's <see cref="SnappyPreamble"/> claims) stays within a budget proportional to the
/// file's size.</item>
/// </list>
/// A failure is an <see cref="InvalidDataException"/> of one line saying what is wrong and where (bytes count from the
/// file's start). Returns where the page headers are, in order, for <see cref="PageHeaderGuardStream"/>.
/// </summary>
internal static class ParquetStructure
{
    /// <summary>Deeper schemas are refused: task data nests a few levels (a struct of lists is 4).</summary>
    public const int MaxSchemaDepth = 64;

    /// <summary>Larger schemas are refused: task data has a few dozen columns, and Parquet.Net builds a reader per
    /// column (about 1.3 ms each, so 4000 columns of 130 bytes each took 5 s for a 0.5 MB file).</summary>
    public const int MaxSchemaElements = 2048;

    /// <summary>Values (levels) of all column chunks and dictionary entries: at most this many per byte of the file,
    /// plus <see cref="ValuesFloor"/>. Run-length encoding lets a repeated value take less than a byte, not 64 times
    /// less over a whole file of text.</summary>
    public const long ValuesPerByte = 64, ValuesFloor = 1 << 16;

    /// <summary>Uncompressed bytes of all pages: at most this many per byte of the file (deflate's limit is 1032
    /// to 1), plus <see cref="DecodedBytesFloor"/>.</summary>
    public const long DecodedBytesPerByte = 1024, DecodedBytesFloor = 16 << 20;

    // PageType and CompressionCodec (parquet.thrift).
    const long DataPage = 0, DictionaryPage = 2, DataPageV2 = 3, Snappy = 1;

    public static (int Start, int End)[] Check(byte[] file)
    {
        // "4-byte magic number PAR1, column chunks, File Metadata, 4-byte length in bytes of file metadata (little
        // endian), 4-byte magic number PAR1" (README, "File format").
        if (file.Length < 12) throw Bad($"{file.Length} bytes are too few for Parquet's magic numbers and footer length");
        if (!file.AsSpan(0, 4).SequenceEqual("PAR1"u8)) throw Bad("it does not start with \"PAR1\"");
        var tail = file.AsSpan(file.Length - 4);
        if (tail.SequenceEqual("PARE"u8)) throw Bad("its footer is encrypted (\"PARE\"), which is not supported");
        if (!tail.SequenceEqual("PAR1"u8)) throw Bad("it does not end with \"PAR1\"");
        int footerEnd = file.Length - 8;
        long footerLength = BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(footerEnd, 4));
        if (footerLength > footerEnd - 4)
            throw Bad($"footer length {footerLength} exceeds the {footerEnd - 4} bytes between the magic numbers");
        int footerStart = footerEnd - (int)footerLength;

        // The FileMetaData struct. Bytes after it inside the footer are not read (a signed plaintext footer has 28).
        var footer = new FooterFacts();
        new ThriftCompactWalker(file, footerEnd, "footer", footer, readerSkipsByHeaders: true).Struct(footerStart, ParquetThriftShapes.FileMetaData);
        CheckSchema(footer.SchemaChildren);

        var chunks = Chunks(footer, footerStart).OrderBy(c => c.Start).ToList();
        var budget = new Budget(file.Length);
        foreach (var chunk in chunks) budget.Values(chunk.NumValues, "column chunks");
        var headers = new List<(int Start, int End)>();
        for (int i = 0; i < chunks.Count; i++)
            WalkPages(file, chunks[i], i + 1 < chunks.Count ? (int)chunks[i + 1].Start : footerStart, headers, budget);
        return headers.ToArray();
    }

    /// <summary>A column chunk as Parquet.Net reads it: from <see cref="Start"/>, <see cref="Size"/> bytes of pages
    /// holding <see cref="NumValues"/> values.</summary>
    sealed record Chunk(string Name, long Start, long Size, long NumValues, long Codec);

    static List<Chunk> Chunks(FooterFacts footer, int footerStart)
    {
        var chunks = new List<Chunk>();
        for (int g = 0; g < footer.RowGroups.Count; g++)
        {
            var (rows, columns) = footer.RowGroups[g];
            if (rows < 0 || (columns.Count == 0 && rows > 0)) throw Bad($"row group {g} has {rows} rows and {columns.Count} columns");
            for (int c = 0; c < columns.Count; c++)
            {
                string name = $"row group {g} column {c}";
                var meta = columns[c] ?? throw Bad($"{name} has no meta_data");
                long numValues = meta.GetValueOrDefault((short)5), size = meta.GetValueOrDefault((short)7);   // num_values, total_compressed_size
                if (numValues is < 0 or > int.MaxValue) throw Bad($"{name} has num_values {numValues}");
                if (rows > numValues) throw Bad($"row group {g} has {rows} rows, more than the {numValues} values of its column {c}");
                // Parquet.Net starts at the least of dictionary_page_offset, data_page_offset and index_page_offset that
                // is not 0 (writers put 0 for "no dictionary page"), and reads pages from there.
                long[] offsets = [meta.GetValueOrDefault((short)11), meta.GetValueOrDefault((short)9), meta.GetValueOrDefault((short)10)];
                if (offsets.All(o => o == 0)) throw Bad($"{name} has no page offset");
                long start = offsets.Where(o => o != 0).Min();
                if (start < 4 || start > footerStart || size < 0 || size > footerStart - start)
                    throw Bad($"{name}: {size} bytes from byte {start} do not lie within the column data (bytes 4 to {footerStart})");
                chunks.Add(new Chunk(name, start, size, numValues, meta.GetValueOrDefault((short)4)));   // codec
            }
        }
        return chunks;
    }

    /// <summary>
    /// Walks the pages of one chunk as Parquet.Net reads them: from its start, page after page until its data pages
    /// hold its num_values, each a well-formed PageHeader followed by its compressed_page_size bytes, all before
    /// <paramref name="limit"/> (where the next chunk starts, or the footer). Not up to total_compressed_size: old
    /// parquet-mr left the dictionary page's header out of it (parquet-dotnet's test file real/nation.dict.parquet),
    /// and Parquet.Net does not read it. Chunks end before the next begins, so all walks together read each byte once.
    /// </summary>
    static void WalkPages(byte[] file, Chunk chunk, int limit, List<(int Start, int End)> headers, Budget budget)
    {
        int pos = (int)chunk.Start;
        long held = 0;
        var page = new PageFacts();
        while (held < chunk.NumValues)
        {
            string what = $"{chunk.Name} page header";
            if (pos >= limit) throw Bad($"{chunk.Name}: its pages hold {held} of its {chunk.NumValues} values by byte {limit}, where its bytes end");
            page.Clear();
            int headerEnd = new ThriftCompactWalker(file, limit, what, page, readerSkipsByHeaders: true).Struct(pos, ParquetThriftShapes.PageHeader);
            headers.Add((pos, headerEnd));
            long compressed = page.CompressedSize ?? throw Bad($"{what} at byte {pos} has no compressed_page_size");
            if (compressed < 0 || compressed > limit - headerEnd)
                throw Bad($"{what} at byte {pos}: compressed_page_size {compressed} runs past the column chunk's end at byte {limit}");
            if (page.UncompressedSize is < 0) throw Bad($"{what} at byte {pos}: uncompressed_page_size {page.UncompressedSize}");
            budget.Decoded(page.UncompressedSize ?? 0);
            if (chunk.Codec == Snappy && SnappyStart(page, compressed) is { } at)
                budget.Decoded(SnappyPreamble.Length(file.AsSpan(headerEnd + at, (int)compressed - at)) ?? 0);
            long? pageValues = page.Type switch
            {
                DataPage => page.DataValues,
                DataPageV2 => page.DataV2Values,
                _ => 0,
            };
            if (pageValues is < 0) throw Bad($"{what} at byte {pos}: num_values {pageValues}");
            held += pageValues ?? 0;
            if (page.Type == DictionaryPage)
            {
                if (page.DictionaryValues is < 0) throw Bad($"{what} at byte {pos}: dictionary num_values {page.DictionaryValues}");
                budget.Values(page.DictionaryValues ?? 0, "column chunks and dictionaries");
            }
            pos = headerEnd + (int)compressed;
        }
        if (held != chunk.NumValues) throw Bad($"{chunk.Name}: its data pages hold {held} values, its num_values says {chunk.NumValues}");
    }

    /// <summary>Where a page's Snappy stream starts, after its header: at once, or in a v2 data page after the levels
    /// (which are not compressed), unless it says is_compressed false (parquet.thrift, DataPageHeaderV2). Null for a
    /// page Parquet.Net does not decompress.</summary>
    static int? SnappyStart(PageFacts page, long compressed) => page.Type switch
    {
        DataPage or DictionaryPage => 0,
        DataPageV2 when page.V2Compressed != 0 && (page.V2LevelBytes ?? 0) is >= 0 and var levels && levels <= compressed => (int)levels,
        _ => null,
    };

    /// <summary>What the file may claim in all: <see cref="ValuesPerByte"/> and <see cref="DecodedBytesPerByte"/>.</summary>
    sealed class Budget(long fileBytes)
    {
        readonly long maxValues = ValuesFloor + ValuesPerByte * fileBytes, maxDecoded = DecodedBytesFloor + DecodedBytesPerByte * fileBytes;
        long values, decoded;

        public void Values(long count, string what)
        {
            values += count;
            if (values > maxValues) throw Bad($"its {what} claim {values} values, more than the {maxValues} a file of {fileBytes} bytes may hold");
        }

        public void Decoded(long bytes)
        {
            decoded += bytes;
            if (decoded > maxDecoded) throw Bad($"its pages claim {decoded} uncompressed bytes, more than the {maxDecoded} a file of {fileBytes} bytes may hold");
        }
    }

    /// <summary>The schema is a tree listed depth first, each group giving its num_children (parquet.thrift,
    /// FileMetaData.schema); its depth is the most groups open at once.</summary>
    static void CheckSchema(List<int> children)
    {
        if (children.Count > MaxSchemaElements) throw Bad($"its schema has {children.Count} elements, more than the {MaxSchemaElements} task data may have");
        if (children.Count == 0) return;
        var open = new Stack<int>();
        open.Push(children[0]);
        for (int i = 1; i < children.Count; i++)
        {
            while (open.Count > 0 && open.Peek() <= 0) open.Pop();
            if (open.Count == 0) return;   // elements past the tree are not read
            open.Push(open.Pop() - 1);
            if (children[i] <= 0) continue;
            open.Push(children[i]);
            if (open.Count > MaxSchemaDepth) throw Bad($"its schema nests deeper than {MaxSchemaDepth} (element {i})");
        }
    }

    static InvalidDataException Bad(string message) => new(message);

    /// <summary>What the footer says that the checks need: each schema element's num_children, and per row group
    /// its num_rows and each column chunk's ColumnMetaData integers by field id (null for a chunk without one).</summary>
    sealed class FooterFacts : IThriftVisitor
    {
        public readonly List<int> SchemaChildren = [];
        public readonly List<(long Rows, List<Dictionary<short, long>?> Columns)> RowGroups = [];
        int children;
        long rows;
        List<Dictionary<short, long>?> columns = [];
        Dictionary<short, long> meta = [];
        Dictionary<short, long>? chunkMeta;

        public void Integer(ThriftShape shape, short id, long value)
        {
            if (shape == ParquetThriftShapes.SchemaElement && id == 5) children = (int)value;   // num_children
            else if (shape == ParquetThriftShapes.ColumnMetaData) meta[id] = value;
            else if (shape == ParquetThriftShapes.RowGroup && id == 3) rows = value;   // num_rows
        }

        public void End(ThriftShape shape)
        {
            if (shape == ParquetThriftShapes.SchemaElement)
            {
                SchemaChildren.Add(children);
                children = 0;
            }
            else if (shape == ParquetThriftShapes.ColumnMetaData)
            {
                chunkMeta = meta;
                meta = [];
            }
            else if (shape == ParquetThriftShapes.ColumnChunk)
            {
                columns.Add(chunkMeta);
                chunkMeta = null;
            }
            else if (shape == ParquetThriftShapes.RowGroup)
            {
                RowGroups.Add((rows, columns));
                rows = 0;
                columns = [];
            }
        }
    }

    /// <summary>What one page header says: its type, sizes, and the num_values of the header its type uses.</summary>
    sealed class PageFacts : IThriftVisitor
    {
        public long? Type, UncompressedSize, CompressedSize, DataValues, DataV2Values, DictionaryValues, V2LevelBytes, V2Compressed;

        public void Clear() => Type = UncompressedSize = CompressedSize = DataValues = DataV2Values = DictionaryValues = V2LevelBytes = V2Compressed = null;

        public void Integer(ThriftShape shape, short id, long value)
        {
            if (shape == ParquetThriftShapes.PageHeader)
            {
                if (id == 1) Type = value;
                else if (id == 2) UncompressedSize = value;
                else if (id == 3) CompressedSize = value;
            }
            else if (id == 1 && shape == ParquetThriftShapes.DataPageHeader) DataValues = value;
            else if (shape == ParquetThriftShapes.DataPageHeaderV2)
            {
                if (id == 1) DataV2Values = value;
                else if (id is 5 or 6) V2LevelBytes = (V2LevelBytes ?? 0) + value;   // definition, repetition levels' bytes
                else if (id == 7) V2Compressed = value;   // is_compressed
            }
            else if (id == 1 && shape == ParquetThriftShapes.DictionaryPageHeader) DictionaryValues = value;
        }

        public void End(ThriftShape shape) { }
    }
}
