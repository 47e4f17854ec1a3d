using System.Text;
using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

[Trait("tier", "unit")]
public class GgufWriterTests
{
    static readonly KeyValuePair<string, GgufValue>[] Metadata =
    {
        new("general.architecture", GgufValue.String("llama")),
        new("llama.block_count", GgufValue.UInt32(4)),
        new("llama.rope.freq_base", GgufValue.Float32(10000f)),
        new("tokenizer.ggml.add_bos_token", GgufValue.Bool(true)),
        new("tokenizer.ggml.token_type", GgufValue.Int32Array(new[] { 2, 3, 6 })),
        new("tokenizer.ggml.tokens", GgufValue.StringArray(new[] { "<unk>", "▁the" })),
    };

    static readonly GgufTensorSpec[] Tensors =
    {
        new("a.weight", new long[] { 2, 3 }, GgmlType.F32),   // 24 bytes
        new("b.weight", new long[] { 5 }, GgmlType.F16),      // 10 bytes
    };

    static void WriteSample(string path, bool overwrite = false) =>
        GgufWriter.Write(path, Metadata, Tensors, (spec, s) => s.Write(Enumerable.Repeat((byte)(spec.Name[0]), (int)spec.ByteSize).ToArray()), overwrite);

    [Fact]
    public void Header_bytes_follow_the_GGUF_v3_layout()
    {
        using var tmp = Paths.Temp();
        string path = tmp["x.gguf"];
        WriteSample(path);
        var b = File.ReadAllBytes(path);
        int p = 0;
        uint U32() { var v = BitConverter.ToUInt32(b, p); p += 4; return v; }
        ulong U64() { var v = BitConverter.ToUInt64(b, p); p += 8; return v; }
        string Str() { int n = (int)U64(); var s = Encoding.UTF8.GetString(b, p, n); p += n; return s; }

        Assert.Equal("GGUF", Encoding.ASCII.GetString(b, 0, 4));
        p = 4;
        Assert.Equal(3u, U32());                      // version
        Assert.Equal(2UL, U64());                     // tensor count
        Assert.Equal(6UL, U64());                     // kv count
        Assert.Equal("general.architecture", Str());
        Assert.Equal(8u, U32());                      // STRING
        Assert.Equal("llama", Str());
        Assert.Equal("llama.block_count", Str());
        Assert.Equal(4u, U32());                      // UINT32
        Assert.Equal(4u, U32());
        Assert.Equal("llama.rope.freq_base", Str());
        Assert.Equal(6u, U32());                      // FLOAT32
        Assert.Equal(10000f, BitConverter.ToSingle(b, p)); p += 4;
        Assert.Equal("tokenizer.ggml.add_bos_token", Str());
        Assert.Equal(7u, U32());                      // BOOL, one byte
        Assert.Equal(1, b[p++]);
        Assert.Equal("tokenizer.ggml.token_type", Str());
        Assert.Equal(9u, U32());                      // ARRAY
        Assert.Equal(5u, U32());                      // of INT32
        Assert.Equal(3UL, U64());
        Assert.Equal(new[] { 2, 3, 6 }, new[] { U32(), U32(), U32() }.Select(x => (int)x));
        Assert.Equal("tokenizer.ggml.tokens", Str());
        Assert.Equal(9u, U32());
        Assert.Equal(8u, U32());                      // of STRING
        Assert.Equal(2UL, U64());
        Assert.Equal("<unk>", Str());
        Assert.Equal("▁the", Str());
        // tensor infos: dims innermost first (reversed torch shape), type, offset
        Assert.Equal("a.weight", Str());
        Assert.Equal(2u, U32());
        Assert.Equal(new ulong[] { 3, 2 }, new[] { U64(), U64() });
        Assert.Equal(0u, U32());                      // F32
        Assert.Equal(0UL, U64());
        Assert.Equal("b.weight", Str());
        Assert.Equal(1u, U32());
        Assert.Equal(5UL, U64());
        Assert.Equal(1u, U32());                      // F16
        Assert.Equal(32UL, U64());                    // 24 bytes rounded up to the 32-byte alignment
        // zero padding to the alignment, then the data; each tensor padded too
        int dataStart = (p + 31) / 32 * 32;
        Assert.All(b[p..dataStart], x => Assert.Equal(0, x));
        Assert.Equal(dataStart + 64, b.Length);
        Assert.All(b[dataStart..(dataStart + 24)], x => Assert.Equal((byte)'a', x));
        Assert.All(b[(dataStart + 24)..(dataStart + 32)], x => Assert.Equal(0, x));
        Assert.All(b[(dataStart + 32)..(dataStart + 42)], x => Assert.Equal((byte)'b', x));
        Assert.All(b[(dataStart + 42)..], x => Assert.Equal(0, x));
    }

    [Fact]
    public void Reader_reads_back_what_the_writer_wrote()
    {
        using var tmp = Paths.Temp();
        WriteSample(tmp["x.gguf"]);
        using var r = GgufReader.Open(tmp["x.gguf"]);
        Assert.Equal(Metadata.Select(kv => kv.Key), r.Metadata.Select(kv => kv.Key));
        Assert.Equal("llama", r["general.architecture"].AsString);
        Assert.Equal(4u, r["llama.block_count"].AsUInt32);
        Assert.Equal(10000f, r["llama.rope.freq_base"].AsFloat32);
        Assert.True(r["tokenizer.ggml.add_bos_token"].AsBool);
        Assert.Equal(new[] { 2, 3, 6 }, r["tokenizer.ggml.token_type"].AsArray<int>());
        Assert.Equal(new[] { "<unk>", "▁the" }, r["tokenizer.ggml.tokens"].AsArray<string>());
        Assert.Equal(new long[] { 3, 2 }, r.Tensor("a.weight").Dims);
        Assert.Equal(new long[] { 2, 3 }, r.Tensor("a.weight").Shape);
        Assert.Equal(GgmlType.F16, r.Tensor("b.weight").Type);
        Assert.All(r.ReadBytes(r.Tensor("b.weight")), x => Assert.Equal((byte)'b', x));
        Assert.Equal(0, r.DataStart % 32);
    }

    [Fact]
    public void Quantized_sizes_count_blocks_per_row()
    {
        Assert.Equal(3 * 2 * 34L, GgmlTypes.ByteSize(GgmlType.Q8_0, new long[] { 3, 64 }));
        Assert.Equal(3 * 2 * 18L, GgmlTypes.ByteSize(GgmlType.Q4_0, new long[] { 3, 64 }));
        Assert.Throws<ArgumentException>(() => GgmlTypes.ByteSize(GgmlType.Q4_0, new long[] { 3, 40 }));
    }

    [Fact]
    public void A_failure_while_writing_data_leaves_neither_the_file_nor_the_temp_file()
    {
        using var tmp = Paths.Temp();
        string path = tmp["x.gguf"];
        var e = Assert.Throws<InvalidOperationException>(() => GgufWriter.Write(path, Metadata, Tensors, (spec, s) =>
        {
            if (spec.Name == "b.weight") throw new InvalidOperationException("boom");
            s.Write(new byte[spec.ByteSize]);
        }));
        Assert.Equal("boom", e.Message);
        Assert.False(File.Exists(path));
        Assert.Empty(Directory.GetFileSystemEntries(tmp.Path));
    }

    [Fact]
    public void A_tensor_writing_the_wrong_byte_count_is_refused_and_cleaned_up()
    {
        using var tmp = Paths.Temp();
        string path = tmp["x.gguf"];
        var e = Assert.Throws<InvalidOperationException>(() => GgufWriter.Write(path, Metadata, Tensors, (spec, s) => s.Write(new byte[3])));
        Assert.Contains("a.weight", e.Message);
        Assert.Contains("24", e.Message);
        Assert.Empty(Directory.GetFiles(tmp.Path));
    }

    [Fact]
    public void An_existing_file_is_kept_unless_overwrite_is_given()
    {
        using var tmp = Paths.Temp();
        string path = tmp["x.gguf"];
        File.WriteAllText(path, "precious");
        var e = Assert.Throws<IOException>(() => WriteSample(path));
        Assert.Contains("--overwrite", e.Message);
        Assert.Equal("precious", File.ReadAllText(path));
        WriteSample(path, overwrite: true);
        using var r = GgufReader.Open(path);
        Assert.Equal(2, r.Tensors.Count);
    }

    [Fact]
    public void Reader_rejects_a_truncated_file_by_name()
    {
        using var tmp = Paths.Temp();
        WriteSample(tmp["x.gguf"]);
        var bytes = File.ReadAllBytes(tmp["x.gguf"]);
        File.WriteAllBytes(tmp["cut.gguf"], bytes[..(bytes.Length - 40)]);
        var e = Assert.Throws<InvalidDataException>(() => GgufReader.Open(tmp["cut.gguf"]));
        Assert.Contains("b.weight", e.Message);
        Assert.Contains("truncated", e.Message);
    }
}
