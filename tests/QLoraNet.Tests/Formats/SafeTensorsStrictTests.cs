using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Tests.Models;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Formats;

/// <summary>
/// The corruptions issue 11 found loading silently (or failing with a message about something else): each one is
/// refused at open, naming the file and what is wrong, as the reference implementation's validation would.
/// </summary>
[Trait("tier", "unit")]
public class SafeTensorsStrictTests
{
    /// <summary>A written file split into its header JSON and data, to be edited and put back together.</summary>
    sealed record Raw(JsonObject Header, byte[] Data, string HeaderText)
    {
        public static Raw Read(string path)
        {
            var bytes = File.ReadAllBytes(path);
            int n = (int)BitConverter.ToUInt64(bytes, 0);
            string text = Encoding.UTF8.GetString(bytes, 8, n);
            return new Raw(JsonNode.Parse(text)!.AsObject(), bytes[(8 + n)..], text);
        }

        /// <summary>Writes header (padded with spaces to 8 bytes, as the writer does) and data; the length field is
        /// the true one plus <paramref name="lengthDelta"/>.</summary>
        public void Write(string path, int lengthDelta = 0, string? headerText = null)
        {
            var h = Encoding.UTF8.GetBytes(headerText ?? Header.ToJsonString());
            int padded = (h.Length + 7) / 8 * 8;
            var header = new byte[padded];
            Array.Fill(header, (byte)' ');
            h.CopyTo(header, 0);
            using var fs = File.Create(path);
            fs.Write(BitConverter.GetBytes((ulong)(padded + lengthDelta)));
            fs.Write(header);
            fs.Write(Data);
        }
    }

    static string TwoTensors(TempDir tmp)
    {
        string path = tmp["x.safetensors"];
        SafeTensors.Write(path, new Dictionary<string, Tensor> { ["a"] = arange(4f), ["b"] = arange(4f) + 10 });
        return path;
    }

    static string OpenError(string path)
    {
        var e = Assert.ThrowsAny<Exception>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain("\n", e.Message);
        return e.Message;
    }

    static long[] Offsets(JsonObject h, string name) => h[name]!["data_offsets"]!.AsArray().Select(x => (long)x!).ToArray();

    static void SetOffsets(JsonObject h, string name, long begin, long end) => h[name]!["data_offsets"] = new JsonArray(begin, end);

    [Fact]
    public void Overlapping_offsets_are_refused()
    {
        using var tmp = Paths.Temp();
        string path = TwoTensors(tmp);
        var raw = Raw.Read(path);
        var b = Offsets(raw.Header, "b");
        SetOffsets(raw.Header, "b", b[0] - 8, b[1] - 8);   // b now reads half of a's bytes
        raw.Write(path);
        Assert.Contains("overlap", OpenError(path));
    }

    [Fact]
    public void Offsets_shifted_by_a_few_bytes_are_refused()
    {
        using var tmp = Paths.Temp();
        string path = TwoTensors(tmp);
        var raw = Raw.Read(path);
        foreach (var name in new[] { "a", "b" })
        {
            var o = Offsets(raw.Header, name);
            SetOffsets(raw.Header, name, o[0] + 2, o[1] + 2);
        }
        raw.Write(path);
        Assert.Contains("gap", OpenError(path));
    }

    [Fact]
    public void Header_length_pointing_into_its_own_padding_is_refused()
    {
        using var tmp = Paths.Temp();
        string path = TwoTensors(tmp);
        var raw = Raw.Read(path);
        // Make sure there is padding to point into, then claim a header 3 bytes shorter: the data would start 3 bytes early.
        string text = raw.Header.ToJsonString() + "      ";
        raw.Write(path, lengthDelta: -3, headerText: text);
        Assert.Contains("wrong header length", OpenError(path));
    }

    [Fact]
    public void Header_length_one_byte_short_is_refused_before_any_tensor_is_read()
    {
        using var tmp = Paths.Temp();
        string path = TwoTensors(tmp);
        var raw = Raw.Read(path);
        raw.Write(path, lengthDelta: -1, headerText: raw.Header.ToJsonString() + " ");
        Assert.Contains("header length", OpenError(path));
    }

    [Fact]
    public void Padding_other_than_spaces_trailing_data_and_duplicate_names_are_refused()
    {
        using var tmp = Paths.Temp();
        string path = TwoTensors(tmp);
        var raw = Raw.Read(path);
        raw.Write(path, headerText: raw.Header.ToJsonString() + "\n\t");
        Assert.Contains("space padding", OpenError(path));

        raw.Write(path);
        File.AppendAllText(path, "junk");
        Assert.Contains("trailing bytes", OpenError(path));

        string json = raw.Header.ToJsonString();
        string b = "\"b\":" + raw.Header["b"]!.ToJsonString();
        raw.Write(path, headerText: json.Replace(b, b + "," + b.Replace("\"b\"", "\"\\u0062\"")));
        Assert.Contains("Duplicate", OpenError(path), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void Shapes_whose_byte_count_overflows_are_refused()
    {
        using var tmp = Paths.Temp();
        string path = TwoTensors(tmp);
        var raw = Raw.Read(path);
        raw.Header["a"]!["shape"] = new JsonArray(4611686018427387904L, 4L);
        raw.Write(path);
        Assert.Contains("overflows", OpenError(path));
    }

    [Fact]
    public void Non_finite_weights_are_refused_by_tensor_name_unless_allowed()
    {
        using var tmp = Paths.Temp();
        string path = tmp["x.safetensors"];
        using var bad = arange(6f);
        bad[2] = tensor(float.NaN);
        bad[4] = tensor(float.PositiveInfinity);
        SafeTensors.Write(path, new Dictionary<string, Tensor> { ["w.ok"] = ones(3), ["w.bad"] = bad, ["ids"] = arange(3L) });
        using (var f = SafeTensorsFile.Open(path))
        {
            using var ok = f.Read("w.ok");
            using var ids = f.Read("ids");
            var e = Assert.Throws<InvalidDataException>(() => f.Read("w.bad"));
            Assert.Contains(path, e.Message);
            Assert.Contains("'w.bad'", e.Message);
            Assert.Contains("1 NaN and 1 Inf", e.Message);
            Assert.Contains("--allow-non-finite-weights", e.Message);
        }
        using (var f = SafeTensorsFile.Open(path, allowNonFinite: true))
        {
            using var t = f.Read("w.bad");
            Assert.True(t[2].isnan().item<bool>());
        }
    }

    [Fact]
    public void Loader_refuses_nan_weights_by_name_and_loads_them_when_allowed()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path, editTensors: t => t["model.layers.0.mlp.up_proj.weight"][3, 1] = tensor(float.NegativeInfinity));
        var options = new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32));
        var e = Assert.Throws<InvalidDataException>(() => LlamaLoader.Load(dir.Path, options));
        Assert.Contains("model.layers.0.mlp.up_proj.weight", e.Message);
        using var model = LlamaLoader.Load(dir.Path, options with { AllowNonFiniteWeights = true });
    }

    [Fact]
    public void Model_builder_passes_the_non_finite_opt_out_to_the_loader()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path, editTensors: t => t["model.norm.weight"][0] = tensor(float.NaN));
        var options = new QLoraNet.Peft.ModelBuildOptions(CPU, ScalarType.Float32, QLoraNet.Quant.BaseFormat.Parse("none"));
        var e = Assert.Throws<InvalidDataException>(() => QLoraNet.Peft.ModelBuilder.Build(dir.Path, options));
        Assert.Contains("model.norm.weight", e.Message);
        using var built = QLoraNet.Peft.ModelBuilder.Build(dir.Path, options with { AllowNonFiniteWeights = true });
    }

    [Fact]
    public void A_tensor_whose_dtype_was_swapped_for_one_of_the_same_size_is_refused_by_the_loader()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path);
        string path = Path.Combine(dir.Path, "model.safetensors");
        var raw = Raw.Read(path);
        raw.Header["model.layers.0.self_attn.k_proj.weight"]!["dtype"] = "F16";  // same 2 bytes as BF16: offsets still agree
        raw.Write(path);
        using (var f = SafeTensorsFile.Open(path)) { }  // a valid file on its own...
        var options = new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32));
        var e = Assert.Throws<InvalidDataException>(() => LlamaLoader.Load(dir.Path, options));
        Assert.Contains("model.layers.0.self_attn.k_proj.weight", e.Message);   // ...but not as this model's weights
        Assert.Contains("F16", e.Message);
        Assert.Contains("BF16", e.Message);
    }

    [Fact]
    public void A_shard_that_is_a_fifo_is_refused_at_once_instead_of_blocking()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path);
        string shard = Path.Combine(dir.Path, "model.safetensors");
        File.Delete(shard);
        using (var p = Process.Start("mkfifo", shard)) p.WaitForExit();
        var error = Bounded.Within(TimeSpan.FromSeconds(30), "opening a FIFO shard blocked",
            () => Assert.ThrowsAny<Exception>(() => CheckpointReader.Open(dir.Path).Dispose()));
        Assert.Contains("FIFO", error.Message);
        Assert.Contains(shard, error.Message);
    }

    [Fact]
    public void Index_cannot_point_outside_the_model_directory()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path);
        File.WriteAllText(Path.Combine(dir.Path, CheckpointReader.IndexFile), "{\"weight_map\": {\"lm_head.weight\": \"../../etc/passwd\"}}");
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(dir.Path).Dispose());
        Assert.Contains("weight_map entry 'lm_head.weight'", e.Message);
    }
}
