using QLoraNet.Formats;
using QLoraNet.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Cli;

/// <summary>
/// The tiny model exported once per type through the CLI (`export --format gguf --type T`), shared by the tests
/// that read the files back (here) and those that run them in llama.cpp (Formats/GgufLlamaCppTests).
/// </summary>
public static class TinyModelExports
{
    static readonly TempDir Dir = Paths.TempForProcess();
    static readonly Dictionary<string, Lazy<(string Path, string Stdout)>> ByType =
        new[] { "f16", "q8_0", "q4_0" }.ToDictionary(t => t, t => new Lazy<(string, string)>(() => Export(t)));

    public static (string Path, string Stdout) Get(string type) => ByType[type].Value;

    static (string, string) Export(string type)
    {
        string path = Dir[$"tiny-{type}.gguf"];
        var (code, stdout, stderr) = CliRunner.Run("export", "--model", Paths.TinyModel, "--format", "gguf", "--type", type, "--out", path);
        Assert.True(code == 0, stderr);
        return (path, stdout);
    }
}

[Trait("tier", "e2e")]
public class ExportTests
{
    static Tensor Source(string hfName)
    {
        using var ckpt = CheckpointReader.Open(Paths.TinyModel);
        return ckpt.Read(hfName).to(ScalarType.Float32);
    }

    static byte[] Bytes(Tensor t) => t.contiguous().bytes.ToArray();

    [Fact]
    public void F16_export_has_the_llama_metadata_and_tensors_llama_cpp_expects()
    {
        var (path, stdout) = TinyModelExports.Get("f16");
        Assert.Contains("38 tensors (9 f32, 29 f16)", stdout);
        using var g = GgufReader.Open(path);
        Assert.Equal("llama", g["general.architecture"].AsString);
        Assert.Equal("tiny-llama-sotu", g["general.name"].AsString);
        Assert.Equal(1u, g["general.file_type"].AsUInt32);
        Assert.Equal(32u, g["general.alignment"].AsUInt32);
        Assert.Equal(1024u, g["llama.context_length"].AsUInt32);
        Assert.Equal(256u, g["llama.embedding_length"].AsUInt32);
        Assert.Equal(4u, g["llama.block_count"].AsUInt32);
        Assert.Equal(688u, g["llama.feed_forward_length"].AsUInt32);
        Assert.Equal(8u, g["llama.attention.head_count"].AsUInt32);
        Assert.Equal(4u, g["llama.attention.head_count_kv"].AsUInt32);
        Assert.Equal(10000f, g["llama.rope.freq_base"].AsFloat32);
        Assert.Equal(1e-5f, g["llama.attention.layer_norm_rms_epsilon"].AsFloat32);
        Assert.Equal(32000u, g["llama.vocab_size"].AsUInt32);
        Assert.Equal(32u, g["llama.rope.dimension_count"].AsUInt32);
        Assert.Equal("llama", g["tokenizer.ggml.model"].AsString);
        Assert.Equal(32000, g["tokenizer.ggml.tokens"].AsArray<string>().Count);
        Assert.Equal(32000, g["tokenizer.ggml.scores"].AsArray<float>().Count);
        Assert.Equal(6, g["tokenizer.ggml.token_type"].AsArray<int>()[3]);
        Assert.Equal((1u, 2u, 0u), (g["tokenizer.ggml.bos_token_id"].AsUInt32, g["tokenizer.ggml.eos_token_id"].AsUInt32, g["tokenizer.ggml.unknown_token_id"].AsUInt32));
        Assert.False(g.Has("tokenizer.ggml.padding_token_id"));
        Assert.True(g["tokenizer.ggml.add_bos_token"].AsBool);
        Assert.False(g["tokenizer.ggml.add_eos_token"].AsBool);

        // tied embeddings: no output.weight, llama.cpp reuses token_embd
        Assert.DoesNotContain(g.Tensors, t => t.Name == "output.weight");
        Assert.Equal(new long[] { 256, 32000 }, g.Tensor("token_embd.weight").Dims);
        Assert.Equal(GgmlType.F32, g.Tensor("output_norm.weight").Type);
        Assert.Equal(GgmlType.F32, g.Tensor("blk.3.ffn_norm.weight").Type);
        Assert.Equal(GgmlType.F16, g.Tensor("blk.3.ffn_down.weight").Type);
        Assert.Equal(new long[] { 688, 256 }, g.Tensor("blk.3.ffn_down.weight").Dims);

        // k is permuted with the 4 kv heads, v is not permuted
        var k = Source("model.layers.1.self_attn.k_proj.weight");
        Assert.Equal(Bytes(GgufRopePermutation.Permute(k, 4).to(ScalarType.Float16)), g.ReadBytes(g.Tensor("blk.1.attn_k.weight")));
        Assert.NotEqual(Bytes(k.to(ScalarType.Float16)), g.ReadBytes(g.Tensor("blk.1.attn_k.weight")));
        var v = Source("model.layers.1.self_attn.v_proj.weight");
        Assert.Equal(Bytes(v.to(ScalarType.Float16)), g.ReadBytes(g.Tensor("blk.1.attn_v.weight")));
        Assert.Equal(Bytes(Source("model.norm.weight")), g.ReadBytes(g.Tensor("output_norm.weight")));
    }

    [Fact]
    public void Q8_0_quantizes_every_matrix_and_falls_back_to_f16_for_rows_of_688()
    {
        var (path, stdout) = TinyModelExports.Get("q8_0");
        Assert.Contains("warning: blk.0.ffn_down.weight: rows of 688 values are not a multiple of 32; written as f16 instead of q8_0", stdout);
        using var g = GgufReader.Open(path);
        Assert.Equal(7u, g["general.file_type"].AsUInt32);
        Assert.Equal(GgmlType.Q8_0, g.Tensor("token_embd.weight").Type);
        Assert.Equal(GgmlType.F16, g.Tensor("blk.0.ffn_down.weight").Type);
        var up = Source("model.layers.2.mlp.up_proj.weight");
        Assert.Equal(GgufQ8_0.QuantizeReference(up.data<float>().ToArray()), g.ReadBytes(g.Tensor("blk.2.ffn_up.weight")));
    }

    [Fact]
    public void Q4_0_keeps_the_tied_output_head_at_q8_0_and_quantizes_permuted_q()
    {
        var (path, _) = TinyModelExports.Get("q4_0");
        using var g = GgufReader.Open(path);
        Assert.Equal(2u, g["general.file_type"].AsUInt32);
        Assert.Equal(GgmlType.Q8_0, g.Tensor("token_embd.weight").Type);   // stands in for llama-quantize's Q6_K
        Assert.Equal(GgmlType.Q4_0, g.Tensor("blk.0.attn_output.weight").Type);
        var q = GgufRopePermutation.Permute(Source("model.layers.0.self_attn.q_proj.weight"), 8);
        Assert.Equal(GgufQ4_0.QuantizeReference(q.contiguous().data<float>().ToArray()), g.ReadBytes(g.Tensor("blk.0.attn_q.weight")));
    }

    [Fact]
    public void The_transform_hook_replaces_weights_as_they_stream()
    {
        using var tmp = Paths.Temp();
        string path = tmp["t.gguf"];
        var seen = new List<string>();
        GgufExporter.Export(Paths.TinyModel, path, GgufExportType.F16, transform: (name, w) =>
        {
            seen.Add(name);
            return name == "model.norm.weight" ? w.to(ScalarType.Float32) * 2 : w;
        });
        Assert.Equal(38, seen.Count);
        using var g = GgufReader.Open(path);
        Assert.Equal(Bytes(Source("model.norm.weight") * 2), g.ReadBytes(g.Tensor("output_norm.weight")));
    }

    [Fact]
    public void A_failure_mid_export_leaves_no_gguf_and_no_temp_file()
    {
        using var tmp = Paths.Temp();
        string path = tmp["t.gguf"];
        var e = Assert.Throws<InvalidOperationException>(() => GgufExporter.Export(Paths.TinyModel, path, GgufExportType.Q8_0,
            transform: (name, w) => name.Contains("layers.0.mlp") ? throw new InvalidOperationException("adapter broke") : w));
        Assert.Equal("adapter broke", e.Message);
        Assert.Empty(Directory.GetFiles(tmp.Path));
    }

    [Fact]
    public void An_existing_output_is_refused_without_overwrite()
    {
        using var tmp = Paths.Temp();
        string path = tmp["m.gguf"];
        File.WriteAllText(path, "keep me");
        var (code, _, stderr) = CliRunner.Run("export", "--model", Paths.TinyModel, "--format", "gguf", "--type", "f16", "--out", path);
        Assert.Equal(1, code);
        Assert.Equal($"error: {path} already exists; pass --overwrite to replace it", stderr.Trim());
        Assert.Equal("keep me", File.ReadAllText(path));
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Theory]
    [InlineData("--format", "onnx", "--format 'onnx' is not supported; use gguf")]
    [InlineData("--type", "q5_k", "--type 'q5_k' is not supported for GGUF; use f16, q8_0 or q4_0")]
    public void Unsupported_format_or_type_is_a_one_line_error(string option, string value, string message)
    {
        using var tmp = Paths.Temp();
        var args = new List<string> { "export", "--model", Paths.TinyModel, "--out", tmp["m.gguf"], option, value };
        var (code, _, stderr) = CliRunner.Run(args.ToArray());
        Assert.Equal(1, code);
        Assert.Equal($"error: {message}", stderr.Trim());
    }

    [Fact]
    public void A_non_llama_architecture_is_refused()
    {
        using var tmp = Paths.Temp();
        Directory.CreateDirectory(tmp["gpt2"]);
        File.WriteAllText(Path.Combine(tmp["gpt2"], "config.json"), """{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}""");
        var (code, _, stderr) = CliRunner.Run("export", "--model", tmp["gpt2"], "--type", "f16", "--out", tmp["m.gguf"]);
        Assert.Equal(1, code);
        Assert.Contains("GPT2LMHeadModel is not supported", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.False(File.Exists(tmp["m.gguf"]));
    }

    [Theory]
    [InlineData("/proc/qloranet-test.gguf", "is not writable")]
    [InlineData("/nonexistent-dir-qln/m.gguf", "does not exist")]
    public void An_unwritable_output_path_is_a_one_line_error(string outPath, string expected)
    {
        var (code, _, stderr) = CliRunner.Run("export", "--model", Paths.TinyModel, "--type", "f16", "--out", outPath);
        Assert.Equal(1, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    static string WriteAdapter(string dir, string module)
    {
        Directory.CreateDirectory(dir);
        new AdapterConfig(new LoraSettings(R: 2, Alpha: 8, Dropout: 0, TargetModules: new[] { "q_proj" })).Save(dir);
        using var rng = new Generator(5);
        SafeTensors.Write(Path.Combine(dir, AdapterFiles.WeightsFileName), new Dictionary<string, Tensor>
        {
            [AdapterKeys.ToPeft(module, AdapterKeys.A)] = randn(2, 256, generator: rng),
            [AdapterKeys.ToPeft(module, AdapterKeys.B)] = randn(256, 2, generator: rng) * 0.1f,
        });
        return dir;
    }

    [Fact]
    public void An_adapter_is_merged_into_the_weights_it_names()
    {
        using var tmp = Paths.Temp();
        const string module = "model.layers.0.self_attn.q_proj";
        string adapter = WriteAdapter(tmp["adapter"], module);
        var (code, stdout, stderr) = CliRunner.Run("export", "--model", Paths.TinyModel, "--type", "f16", "--out", tmp["m.gguf"], "--adapter", adapter);
        Assert.True(code == 0, stderr);
        Assert.Contains("merged 1 LoRA modules", stdout);

        using var g = GgufReader.Open(tmp["m.gguf"]);
        using var ckpt = CheckpointReader.Open(Paths.TinyModel);
        using var factors = SafeTensorsFile.Open(Path.Combine(adapter, AdapterFiles.WeightsFileName));
        var merged = LoraMath.MergedWeight(ckpt.Read(module + ".weight").to(ScalarType.Float32), factors.Read(AdapterKeys.ToPeft(module, AdapterKeys.A)),
            factors.Read(AdapterKeys.ToPeft(module, AdapterKeys.B)), scaling: 8.0 / 2);
        Assert.Equal(Bytes(GgufRopePermutation.Permute(merged, 8).to(ScalarType.Float16)), g.ReadBytes(g.Tensor("blk.0.attn_q.weight")));
        var untouched = GgufRopePermutation.Permute(Source("model.layers.1.self_attn.q_proj.weight"), 8);
        Assert.Equal(Bytes(untouched.to(ScalarType.Float16)), g.ReadBytes(g.Tensor("blk.1.attn_q.weight")));
    }

    [Fact]
    public void An_adapter_for_another_model_is_refused_before_writing()
    {
        using var tmp = Paths.Temp();
        string adapter = WriteAdapter(tmp["adapter"], "model.layers.9.self_attn.q_proj");
        var (code, _, stderr) = CliRunner.Run("export", "--model", Paths.TinyModel, "--type", "f16", "--out", tmp["m.gguf"], "--adapter", adapter);
        Assert.Equal(1, code);
        Assert.Contains("LoRA module 'model.layers.9.self_attn.q_proj' has no weight", stderr);
        Assert.False(File.Exists(tmp["m.gguf"]));
    }
}
