using Parquet;
using Parquet.Serialization;
using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Data;
using static QLoraNet.Evaluation.Data.ThriftType;

namespace QLoraNet.Tests.Evaluation;

/// <summary>
/// Parquet.Net 6.1.0 trusts a file's counts and offsets (a damaged footer made it spin practically forever), so
/// <see cref="ParquetStructure"/> checks a file before it reads one: files Parquet.Net writes, with dictionary pages,
/// several row groups and Thrift fields nobody here knows, still read; a damaged one is a one-line error naming the
/// file and what is wrong where, at once.
/// </summary>
[Trait("tier", "unit")]
public class ParquetStructureTests
{
    public sealed class Row { public string id { get; set; } = ""; public string label { get; set; } = ""; public int n { get; set; } public List<string> tags { get; set; } = []; }

    static List<Row> Rows(int count) => Enumerable.Range(0, count).Select(i => new Row
    {
        id = $"q{i}", label = "ABC"[i % 3].ToString(), n = i % 4, tags = Enumerable.Repeat(i % 2 == 0 ? "even" : "odd", i % 3).ToList(),
    }).ToList();

    /// <summary>Why the file was refused: the part of the one-line error after "PATH: not a readable Parquet file (".</summary>
    static string Refusal(byte[] file)
    {
        using var dir = Paths.Temp();
        string path = dir["test.parquet"];
        File.WriteAllBytes(path, file);
        var e = Assert.Throws<TaskException>(() => DocFiles.Read(path));
        Assert.DoesNotContain('\n', e.Message);
        string prefix = $"{path}: not a readable Parquet file (";
        Assert.StartsWith(prefix, e.Message);
        Assert.EndsWith(")", e.Message);
        return e.Message[prefix.Length..^1];
    }

    static List<Doc> Read(byte[] file)
    {
        using var dir = Paths.Temp();
        File.WriteAllBytes(dir["test.parquet"], file);
        return DocFiles.Read(dir["test.parquet"]);
    }

    static long[] Ns(List<Doc> docs) => docs.Select(d => Convert.ToInt64(d["n"])).ToArray();

    [Theory]
    [InlineData(CompressionMethod.None)]
    [InlineData(CompressionMethod.Snappy)]
    [InlineData(CompressionMethod.Gzip)]
    [InlineData(CompressionMethod.Zstd)]
    public async Task Files_Parquet_Net_writes_with_several_row_groups_pass_and_read(CompressionMethod compression)
    {
        var rows = Rows(50);
        using var stream = new MemoryStream();
        await ParquetSerializer.SerializeAsync(rows, stream, new ParquetOptions { RowGroupSize = 12, CompressionMethod = compression });
        var file = stream.ToArray();
        stream.Position = 0;
        await using (var reader = await ParquetReader.CreateAsync(stream)) Assert.Equal(5, reader.RowGroupCount);

        Assert.Equal(5 * 4, ParquetStructure.Check(file).Length);   // one page per column chunk
        var docs = Read(file);
        Assert.Equal(rows.Select(r => (long)r.n), Ns(docs));
        Assert.Equal(rows.Select(r => r.label), docs.Select(d => (string)d["label"]!));
        Assert.Equal(rows[4].tags, ((IReadOnlyList<object?>)docs[4]["tags"]!).Cast<string>());
    }

    [Fact]
    public void Dictionary_pages_in_several_row_groups_pass_and_read()
    {
        // Parquet.Net 6.1.0 writes no dictionary pages (its dictionary encoder is never called), so by hand.
        var file = new HandBuiltParquet { Groups = [[5, 5, 9, 5], [7], [9, 9, 2]], Dictionary = true }.Build();
        Assert.Equal(3 * 2, ParquetStructure.Check(file).Length);
        Assert.Equal([5, 5, 9, 5, 7, 9, 9, 2], Ns(Read(file)));
    }

    /// <summary>Small files of other writers, from parquet-dotnet's test data (tests/fixtures/parquet/README.md).</summary>
    [Theory]
    [InlineData("nation.dict.parquet")]   // parquet-mr: dictionary pages, total_compressed_size short of its pages
    [InlineData("fastparquet-empty-list-type-0.parquet")]   // fastparquet: an empty list whose element type is 0
    [InlineData("rle-dictionary-arrow-v2.parquet")]   // Arrow: dictionary and v2 data pages
    [InlineData("duckdb.parquet")]   // DuckDB
    [InlineData("spark-dictionary.parquet")]   // Spark
    [InlineData("list-structs.parquet")]   // parquet-mr: a list of structs
    public async Task Files_of_other_writers_pass_and_read_as_without_the_check(string name)
    {
        var file = File.ReadAllBytes(Path.Combine(Paths.RepoRoot, "tests", "fixtures", "parquet", name));
        var headers = ParquetStructure.Check(file);
        Assert.NotEmpty(headers);
        var plain = (await ParquetSerializer.DeserializeUntypedAsync(new MemoryStream(file))).Data;
        var guarded = (await ParquetSerializer.DeserializeUntypedAsync(new PageHeaderGuardStream(file, headers))).Data;
        Assert.NotEmpty(plain);
        Assert.Equal(plain.Count, guarded.Count);
        Assert.Equal(string.Join(",", plain[^1].Values), string.Join(",", guarded[^1].Values));
    }

    [Fact]
    public void A_hand_built_file_reads_and_fields_nobody_here_knows_are_skipped()
    {
        Assert.Equal([1, 2, 3], Ns(Read(new HandBuiltParquet().Build())));

        // Fields of a newer parquet.thrift, or a writer's own: every kind Parquet.Net 6.1.0 skips correctly.
        var file = new HandBuiltParquet
        {
            Values = [7, 8],
            FileMetaDataExtra = w => w
                .Field(100, Binary).Binary("a writer's note").Field(101, I64).Int(-1L << 40).Field(102, List).ListHeader(I32, 20)
                .Raw(Enumerable.Repeat((byte)0x02, 20).ToArray()).Field(103, ThriftType.Double).Raw(new byte[8]).Field(104, I8).Raw(7)
                .Field(105, Struct).Begin().End()   // an empty struct (as parquet.thrift's newer ColumnOrder members)
                .Field(106, Struct).Begin().Field(1, True).Field(2, False).End()   // a struct of booleans only
                .Field(107, List).ListHeader(List, 2).ListHeader(I64, 1).Int(5).ListHeader(Binary, 0)   // lists of lists
                .Field(108, List).ListHeader(True, 0).Field(109, True),   // an empty list of booleans, a boolean
            ColumnMetaDataExtra = w => w.Field(40, Binary).Binary("x").Field(41, I32).Int(3),
            PageHeaderExtra = w => w.Field(30, I32).Int(12345).Field(31, Binary).Binary("page note"),
        }.Build();
        Assert.Equal([7, 8], Ns(Read(file)));
    }

    [Fact]
    public void Unknown_fields_that_Parquet_Net_skips_wrongly_are_refused()
    {
        // It skips a struct by its field headers alone, so the i32's value would be read as field headers.
        var b = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, Struct).Begin().Field(1, I32).Int(1000).End() };
        var file = b.Build();
        Assert.Equal($"footer: unknown FileMetaData field 100 at byte {b.FileMetaDataExtraAt + 3} is a struct holding an i32 field, which Parquet.Net 6.1.0 cannot skip",
            Refusal(file));

        // It skips a boolean list element without reading its byte.
        var bools = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, List).ListHeader(True, 2).Raw(1, 2) };
        var boolsFile = bools.Build();
        Assert.Equal($"footer: unknown FileMetaData field 100 at byte {bools.FileMetaDataExtraAt + 4} holds a boolean list element, which Parquet.Net 6.1.0 cannot skip",
            Refusal(boolsFile));

        var map = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, Map).Varint(0) };
        var mapFile = map.Build();
        Assert.Equal($"footer: unknown FileMetaData field 100 at byte {map.FileMetaDataExtraAt} holds a map, which Parquet.Net 6.1.0 cannot skip", Refusal(mapFile));
    }

    [Fact]
    public void A_known_field_of_another_type_or_twice_is_refused()
    {
        // Parquet.Net reads a field by its id alone: a binary where an i64 belongs would be read as a varint.
        var b = new HandBuiltParquet { ColumnMetaDataExtra = w => w.Field(10, Binary).Binary("x") };
        var file = b.Build();
        Assert.Equal($"footer: ColumnMetaData.index_page_offset (field 10) at byte {b.ColumnMetaDataExtraAt} is a binary, where Parquet has an i64", Refusal(file));

        var twice = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(3, I64).Int(5) };
        var twiceFile = twice.Build();
        Assert.Equal($"footer: FileMetaData.num_rows (field 3) at byte {twice.FileMetaDataExtraAt} appears twice", Refusal(twiceFile));
    }

    [Fact]
    public async Task The_fuzz_input_that_hung_Parquet_Net_fails_at_once()
    {
        var input = File.ReadAllBytes(Path.Combine(Paths.RepoRoot, "tests", "fixtures", "fuzz", "task-data.parquet", "e3b7ca1751866782.bin"));
        Exception? error = null;
        var read = Task.Run(() => error = Record.Exception(() => Read(input)));
        // A hang guard only; it takes milliseconds.
        Assert.True(await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(30))) == read, "no result after 30 s: the read hangs");
        var e = Assert.IsType<TaskException>(error);
        Assert.Matches(@"^\S+: not a readable Parquet file \(footer: FileMetaData\.created_by \(field 6\) at byte \d+ is a boolean, where Parquet has a binary\)$", e.Message);
    }

    [Fact]
    public void A_huge_count_of_booleans_is_refused()
    {
        var b = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, List).Raw(0xF0 | (int)True).Varint(int.MaxValue) };
        var file = b.Build();
        // The list starts at the field's header (3 bytes: the type, then field id 100 as a 2-byte varint); what is
        // left after its 5-byte count is FileMetaData's stop field.
        Assert.Equal($"footer: list of 2147483647 elements at byte {b.FileMetaDataExtraAt} exceeds the 1 bytes left", Refusal(file));
    }

    [Fact]
    public void A_binary_longer_than_the_footer_is_refused()
    {
        var b = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, Binary).Varint(1000).Raw(1, 2, 3) };
        var file = b.Build();
        Assert.Equal($"footer: binary of 1000 bytes at byte {b.FileMetaDataExtraAt} exceeds the 4 bytes left", Refusal(file));
    }

    [Fact]
    public void A_varint_of_11_bytes_is_refused()
    {
        var b = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, I64).Raw([.. Enumerable.Repeat((byte)0x80, 10), 0x01]) };
        var file = b.Build();
        Assert.Equal($"footer: varint at byte {b.FileMetaDataExtraAt + 3} is longer than 10 bytes", Refusal(file));

        var wide = new HandBuiltParquet { FileMetaDataExtra = w => w.Field(100, I32).Raw(0xFF, 0xFF, 0xFF, 0xFF, 0x1F) };
        var wideFile = wide.Build();
        Assert.Equal($"footer: varint at byte {wide.FileMetaDataExtraAt + 3} is larger than 32 bits", Refusal(wideFile));
    }

    [Fact]
    public void Nesting_or_schemas_past_the_limits_are_refused()
    {
        // Lists of lists, which Parquet.Net could skip: the struct is level 1, its list level 2, and so on.
        var b = new HandBuiltParquet { FileMetaDataExtra = w => { w.Field(100, List); for (int i = 0; i < 100; i++) w.ListHeader(List, 1); w.ListHeader(I32, 0); } };
        var file = b.Build();
        Assert.Equal($"footer: values nested deeper than {ThriftCompactWalker.MaxDepth} at byte {b.FileMetaDataExtraAt + 3 + 63}", Refusal(file));

        var schema = new HandBuiltParquet { ExtraSchemaGroups = 70 };
        Assert.Equal($"its schema nests deeper than {ParquetStructure.MaxSchemaDepth} (element 64)", Refusal(schema.Build()));
        var wide = new HandBuiltParquet { ExtraSchemaGroups = ParquetStructure.MaxSchemaElements };
        Assert.Equal($"its schema has {ParquetStructure.MaxSchemaElements + 2} elements, more than the {ParquetStructure.MaxSchemaElements} task data may have", Refusal(wide.Build()));
    }

    [Fact]
    public void A_page_running_past_its_column_chunk_is_refused()
    {
        var b = new HandBuiltParquet { CompressedPageSize = 100 };
        var file = b.Build();
        Assert.Equal($"row group 0 column 0 page header at byte {b.PageStart}: compressed_page_size 100 runs past the column chunk's end at byte {b.ChunkEnd}", Refusal(file));

        var negative = new HandBuiltParquet { CompressedPageSize = -5 };
        var negativeFile = negative.Build();
        Assert.Equal($"row group 0 column 0 page header at byte 4: compressed_page_size -5 runs past the column chunk's end at byte {negative.ChunkEnd}", Refusal(negativeFile));
    }

    [Fact]
    public void Lengths_and_offsets_outside_the_file_are_refused()
    {
        var b = new HandBuiltParquet { FooterLength = 1_000_000 };
        var file = b.Build();
        Assert.Equal($"footer length 1000000 exceeds the {file.Length - 12} bytes between the magic numbers", Refusal(file));

        var chunk = new HandBuiltParquet { TotalCompressedSize = 1L << 40 };
        var chunkFile = chunk.Build();
        Assert.Equal($"row group 0 column 0: {1L << 40} bytes from byte 4 do not lie within the column data (bytes 4 to {chunk.FooterStart})", Refusal(chunkFile));

        Assert.Equal("it does not end with \"PAR1\"", Refusal([.. new HandBuiltParquet().Build().SkipLast(1)]));
    }

    [Fact]
    public void Counts_that_disagree_or_outgrow_the_file_are_refused()
    {
        var few = new HandBuiltParquet { PageNumValues = 2 };
        var fewFile = few.Build();
        Assert.Equal($"row group 0 column 0: its pages hold 2 of its 3 values by byte {few.FooterStart}, where its bytes end", Refusal(fewFile));
        Assert.Equal("row group 0 column 0: its data pages hold 4 values, its num_values says 3", Refusal(new HandBuiltParquet { PageNumValues = 4 }.Build()));
        Assert.Equal("row group 0 has 3 rows, more than the 2 values of its column 0", Refusal(new HandBuiltParquet { NumValues = 2, PageNumValues = 2 }.Build()));

        // Old parquet-mr left the dictionary page's header out of total_compressed_size; Parquet.Net does not read it.
        Assert.Equal([1, 2, 3], Ns(Read(new HandBuiltParquet { TotalCompressedSize = 10 }.Build())));

        var huge = new HandBuiltParquet { NumValues = 100_000_000 };
        var file = huge.Build();
        long budget = ParquetStructure.ValuesFloor + ParquetStructure.ValuesPerByte * file.Length;
        Assert.Equal($"its column chunks claim 100000000 values, more than the {budget} a file of {file.Length} bytes may hold", Refusal(file));
    }

    [Fact]
    public async Task A_Snappy_page_claiming_a_gigabyte_is_refused()
    {
        // Snappier allocates the length a Snappy stream starts with before decoding: a 1 KB file made it allocate 1 GiB.
        using var stream = new MemoryStream();
        await ParquetSerializer.SerializeAsync(Rows(3), stream, new ParquetOptions { CompressionMethod = CompressionMethod.Snappy });
        var file = stream.ToArray();
        int data = ParquetStructure.Check(file)[0].End;
        byte[] gigabyte = [0x80, 0x80, 0x80, 0x80, 0x04];   // 2^30 as a varint
        gigabyte.CopyTo(file, data);
        long budget = ParquetStructure.DecodedBytesFloor + ParquetStructure.DecodedBytesPerByte * file.Length;
        Assert.Matches($@"^its pages claim 10737418\d\d uncompressed bytes, more than the {budget} a file of {file.Length} bytes may hold$", Refusal(file));
    }

    [Fact]
    public void Page_data_shorter_than_its_header_says_stops_at_the_chunk_end()
    {
        // Three values in 8 bytes: Parquet.Net decodes two, then reads on past the chunk for the third value's page;
        // what follows is the footer, which it may only read as a page header through our stream's refusal.
        var b = new HandBuiltParquet { DataBytesMissing = 4 };
        var file = b.Build();
        ParquetStructure.Check(file);   // the structure itself is sound
        using var dir = Paths.Temp();
        File.WriteAllBytes(dir["test.parquet"], file);
        var e = Assert.Throws<TaskException>(() => DocFiles.Read(dir["test.parquet"]));
        Assert.StartsWith($"{dir["test.parquet"]}: not a readable Parquet file (", e.Message);
        var inner = e.InnerException;
        while (inner is not null && inner.Message.IndexOf("a page header is read at byte", StringComparison.Ordinal) < 0) inner = inner.InnerException;
        Assert.NotNull(inner);
        Assert.Equal($"a page header is read at byte {b.FooterStart}, where no column chunk has one (page data shorter than its header says?)", inner!.Message);
    }

    [Fact]
    public void The_walker_validates_any_struct_and_returns_its_end()
    {
        // A struct with every type (a map, a set, a UUID, a long-form field id, a negative id), then trailing bytes.
        var w = new CompactWriter().Begin()
            .Field(1, True).Field(2, I8).Raw(0x7F).Field(3, I16).Int(-300).Field(20, I32).Int(int.MinValue).Field(-4, I64).Int(long.MaxValue)
            .Field(5, ThriftType.Double).Raw(new byte[8]).Field(6, Binary).Binary("é").Field(7, List).ListHeader(True, 3).Raw(1, 2, 1)
            .Field(8, Set).ListHeader(Binary, 1).Binary("s").Field(9, Map).Varint(2).Raw(0x85).Binary("k").Int(1).Binary("l").Int(2)
            .Field(10, Map).Varint(0).Field(11, Struct).Begin().Field(1, Struct).Begin().End().End().Field(12, Uuid).Raw(new byte[16])
            .End().Raw(0xEE, 0xEE);
        var bytes = w.ToArray();
        Assert.Equal(bytes.Length - 2, new ThriftCompactWalker(bytes, bytes.Length, "test").Struct(0, null));

        // A list of booleans counts one byte each: a count past the bytes is refused before any is read.
        var spin = new CompactWriter().Begin().Field(1, List).Raw(0xF1).Varint(uint.MaxValue).End().ToArray();
        var e = Assert.Throws<InvalidDataException>(() => new ThriftCompactWalker(spin, spin.Length, "test").Struct(0, null));
        Assert.Equal("test: list of 4294967295 elements at byte 0 exceeds the 1 bytes left", e.Message);

        var badType = new byte[] { 0x1E, 0x00 };
        Assert.Equal("test: unknown type id 14 at byte 0", Assert.Throws<InvalidDataException>(() => new ThriftCompactWalker(badType, 2, "test").Struct(0, null)).Message);
        var cut = new byte[] { 0x18, 0x05, 0x61 };
        Assert.Equal("test: binary of 5 bytes at byte 0 exceeds the 1 bytes left", Assert.Throws<InvalidDataException>(() => new ThriftCompactWalker(cut, 3, "test").Struct(0, null)).Message);
        var open = new byte[] { 0x15, 0x02 };
        Assert.Equal("test: a field header at byte 2 runs past the end (byte 2)", Assert.Throws<InvalidDataException>(() => new ThriftCompactWalker(open, 2, "test").Struct(0, null)).Message);
    }
}
