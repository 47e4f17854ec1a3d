using System.Text;
using QLoraNet.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Formats;

[Trait("tier", "unit")]
public class SafeTensorsTests
{
    [Fact]
    public void Round_trip_is_bit_identical_for_every_dtype()
    {
        using var tmp = Paths.Temp();
        var tensors = new Dictionary<string, Tensor>
        {
            ["a.f32"] = torch.randn(3, 5),
            ["b.bf16"] = torch.randn(7).to(ScalarType.BFloat16),
            ["c.f16"] = torch.randn(2, 2).to(ScalarType.Float16),
            ["d.u8"] = torch.randint(0, 255, new long[] { 9 }, dtype: ScalarType.Byte),
            ["e.i64"] = torch.arange(4L),
            ["f.i8"] = torch.tensor(new sbyte[] { -3, 4 }),
            ["g.scalar"] = torch.tensor(2.5f),
        };
        string path = tmp["x.safetensors"];
        SafeTensors.Write(path, tensors, new Dictionary<string, string> { ["hello"] = "world" });
        using var f = SafeTensorsFile.Open(path);
        Assert.Equal("world", f.Metadata["hello"]);
        Assert.Equal(tensors.Keys.OrderBy(k => k), f.Names.OrderBy(k => k));
        foreach (var (name, t) in tensors)
        {
            using var r = f.Read(name);
            Assert.Equal(t.dtype, r.dtype);
            Assert.Equal(t.shape, r.shape);
            Assert.True(t.contiguous().bytes.ToArray().SequenceEqual(r.bytes.ToArray()), name);
        }
        Assert.Equal(new[] { path }, Directory.GetFileSystemEntries(Path.GetDirectoryName(path)!)); // no temporary left
    }

    [Fact]
    public void Header_is_padded_to_eight_bytes()
    {
        using var tmp = Paths.Temp();
        SafeTensors.Write(tmp["x.safetensors"], new Dictionary<string, Tensor> { ["w"] = torch.zeros(3) });
        var bytes = File.ReadAllBytes(tmp["x.safetensors"]);
        Assert.Equal(0UL, BitConverter.ToUInt64(bytes, 0) % 8);
    }

    [Fact]
    public void Reads_the_tiny_models_shards_through_the_index()
    {
        using var ckpt = CheckpointReader.Open(Paths.TinyModel);
        Assert.Equal(2, ckpt.ShardPaths.Count);
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", ckpt.Names);
        var info = ckpt.Info("model.embed_tokens.weight");
        Assert.Equal(ScalarType.BFloat16, info.DType);
        Assert.Equal(new long[] { 32000, 256 }, info.Shape);
        using var t = ckpt.Read("model.norm.weight");
        Assert.Equal(new long[] { 256 }, t.shape);
        Assert.True(t.to(ScalarType.Float32).abs().sum().item<float>() > 0);
    }

    static string WriteRaw(TempDir tmp, string header, int dataBytes, long? headerLenOverride = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var path = tmp["bad.safetensors"];
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)(headerLenOverride ?? h.Length)));
        fs.Write(h);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    [Theory]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 999999L, "runs past the end")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 200000000L, "exceeds")]
    [InlineData("{\"w\": not json}", 8, null, "not valid JSON")]
    [InlineData("{\"w\": not json", 8, null, "does not end with '}'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, null, "needs 8")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, null, "needs 12")]
    [InlineData("{\"w\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, null, "dtype 'Q9'")]
    [InlineData("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, null, "invalid data_offsets")]
    [InlineData("{\"w\":{\"shape\":[2]}}", 8, null, "needs dtype")]
    public void Corrupt_files_fail_at_open_naming_the_file_and_problem(string header, int data, long? len, string expected)
    {
        using var tmp = Paths.Temp();
        var path = WriteRaw(tmp, header, data, len);
        var e = Assert.ThrowsAny<Exception>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Truncated_real_shard_is_detected()
    {
        using var tmp = Paths.Temp();
        var src = Path.Combine(Paths.TinyModel, "model-00002-of-00002.safetensors");
        var bytes = File.ReadAllBytes(src);
        var path = tmp["model.safetensors"];
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Missing_shard_named_in_index_is_an_error()
    {
        using var tmp = Paths.Temp();
        foreach (var f in new[] { "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors" })
            File.Copy(Path.Combine(Paths.TinyModel, f), tmp[f]);
        var e = Assert.Throws<FileNotFoundException>(() => CheckpointReader.Open(tmp.Path).Dispose());
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
        Assert.Contains("missing", e.Message);
    }

    [Fact]
    public void Missing_directory_and_missing_weights_are_errors()
    {
        Assert.Contains("does not exist", Assert.Throws<DirectoryNotFoundException>(() => CheckpointReader.Open("/no/such/dir")).Message);
        using var tmp = Paths.Temp();
        Assert.Contains("no model.safetensors", Assert.Throws<FileNotFoundException>(() => CheckpointReader.Open(tmp.Path)).Message);
    }

    [Fact]
    public void Sharded_writer_splits_and_writes_an_index_that_reads_back()
    {
        using var tmp = Paths.Temp();
        var tensors = Enumerable.Range(0, 5).ToDictionary(i => $"t{i}", i => torch.full(new long[] { 100 }, (float)i));
        var layout = tensors.Select(kv => new SafeTensors.Entry(kv.Key, ScalarType.Float32, new long[] { 100 })).ToList();
        var files = CheckpointWriter.Write(tmp.Path, layout, n => tensors[n].clone(), maxShardBytes: 900);
        Assert.Equal(3, files.Count);
        using var ckpt = CheckpointReader.Open(tmp.Path);
        Assert.Equal(5, ckpt.Names.Count);
        using var t3 = ckpt.Read("t3");
        Assert.Equal(3f, t3[7].item<float>());
    }
}
