using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Tests.Peft;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>The tiny model written once as an nf4-dq checkpoint (`quantize`), shared by the tests of a class.</summary>
public sealed class QuantizedTinyFixture : IDisposable
{
    readonly TempDir _dir = Paths.Temp();
    public string Dir => _dir["tiny-nf4-dq"];
    public QuantizedTinyFixture() => QuantizedCheckpoint.Write(Paths.TinyModel, Dir, new FourBitFormat(FourBitType.Nf4, DoubleQuant: true));
    public void Dispose() => _dir.Dispose();
}

[Trait("tier", "parity")]
public class QuantizedCheckpointTests(QuantizedTinyFixture quantized) : IClassFixture<QuantizedTinyFixture>
{
    static LoadOptions Nf4DqOnLoad() =>
        new(CPU, ScalarType.Float32, LinearPolicies.Quantized(ModelFamilies.Load(Paths.TinyModel), BaseFormat.Parse("nf4-dq"), ScalarType.Float32, CPU, ScalarType.Float32));

    [Fact]
    public void Stored_checkpoint_has_bitsandbytes_keys_and_config()
    {
        using var ckpt = CheckpointReader.Open(quantized.Dir);
        string p = "model.layers.3.mlp.down_proj.weight";
        Assert.Equal(ScalarType.Byte, ckpt.Info(p).DType);
        Assert.Equal(new long[] { 256 * 688 / 2, 1 }, ckpt.Info(p).Shape);
        Assert.Equal(new long[] { 256 * 688 / 64 }, ckpt.Info(p + ".absmax").Shape);
        Assert.Equal(ScalarType.Byte, ckpt.Info(p + ".absmax").DType);
        Assert.Equal(new long[] { 256 }, ckpt.Info(p + ".nested_quant_map").Shape);
        Assert.True(ckpt.Contains(p + ".quant_state.bitsandbytes__nf4"));
        Assert.Equal(ScalarType.BFloat16, ckpt.Info("model.embed_tokens.weight").DType);
        Assert.Equal(28, ckpt.Names.Count(n => n.EndsWith(".quant_state.bitsandbytes__nf4")));

        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(quantized.Dir, "config.json")))!;
        var q = config["quantization_config"]!;
        Assert.Equal("bitsandbytes", (string?)q["quant_method"]);
        Assert.Equal("nf4", (string?)q["bnb_4bit_quant_type"]);
        Assert.True((bool)q["bnb_4bit_use_double_quant"]!);
        Assert.True((bool)q["load_in_4bit"]!);
        Assert.Equal("lm_head", (string?)q["llm_int8_skip_modules"]![0]);
        Assert.True(File.Exists(Path.Combine(quantized.Dir, "tokenizer.model")));
    }

    [Fact]
    public void Loading_the_stored_checkpoint_equals_quantizing_on_load_bit_for_bit()
    {
        using var onLoad = LlamaLoader.Load(Paths.TinyModel, Nf4DqOnLoad());
        using var stored = LlamaLoader.Load(quantized.Dir, Nf4DqOnLoad() with { LinearFactory = (path, _) => throw new InvalidOperationException($"{path} was quantized again") });
        var a = onLoad.named_modules().Where(m => m.module is FourBitLinear).ToList();
        var b = stored.named_modules().Where(m => m.module is FourBitLinear).ToDictionary(m => m.name, m => (FourBitLinear)m.module);
        Assert.Equal(28, a.Count);
        foreach (var (name, module) in a)
        {
            using var wa = ((FourBitLinear)module).DequantizeWeight(ScalarType.Float32);
            using var wb = b[name].DequantizeWeight(ScalarType.Float32);
            Assert.True(Bits.Same(wa, wb), name);
            Assert.Equal("nf4-dq", b[name].FormatName);
        }
        using var ids = tensor(new long[] { 1, 450, 377, 744, 29892, 322, 278 }).unsqueeze(0);
        using var la = onLoad.forward(ids);
        using var lb = stored.forward(ids);
        Assert.True(Bits.Same(la, lb));
    }

    [Fact]
    public void Stored_format_is_read_back_and_other_formats_are_refused()
    {
        Assert.Equal(BaseFormat.Parse("nf4-dq"), QuantizedCheckpoint.StoredFormat(quantized.Dir));
        Assert.Null(QuantizedCheckpoint.StoredFormat(Paths.TinyModel));
        QuantizedCheckpoint.RequireCompatible(quantized.Dir, BaseFormat.Parse("none"));
        QuantizedCheckpoint.RequireCompatible(quantized.Dir, BaseFormat.Parse("nf4-dq"));
        var e = Assert.Throws<ArgumentException>(() => QuantizedCheckpoint.RequireCompatible(quantized.Dir, BaseFormat.Parse("nf4")));
        Assert.Contains("already quantized as nf4-dq", e.Message);
    }

    /// <summary>The synthetic one-layer model, stored as NF4 with blocksize 16, then edited.</summary>
    static string BadLoad(Action<System.Text.Json.Nodes.JsonObject>? config = null, Action<Dictionary<string, Tensor>>? tensors = null)
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], new FourBitFormat(FourBitType.Nf4, BlockSize: 16));
        string file = Path.Combine(dir["q"], "model.safetensors");
        Dictionary<string, Tensor> all;
        using (var st = SafeTensorsFile.Open(file)) all = st.Names.ToDictionary(n => n, st.Read);
        tensors?.Invoke(all);
        SafeTensors.Write(file, all);
        if (config != null)
        {
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir["q"], "config.json")))!.AsObject();
            config(json);
            File.WriteAllText(Path.Combine(dir["q"], "config.json"), json.ToJsonString());
        }
        var e = Assert.ThrowsAny<Exception>(() => LlamaLoader.Load(dir["q"], new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32))));
        Assert.DoesNotContain("\n", e.Message);
        return e.Message;
    }

    [Fact]
    public void Synthetic_stored_model_loads()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], new FourBitFormat(FourBitType.Fp4, BlockSize: 16));
        using var model = LlamaLoader.Load(dir["q"], new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32)));
        Assert.Equal(7, model.named_modules().Count(m => m.module is FourBitLinear { FormatName: "fp4-b16" }));
        Assert.IsType<DenseFrozenLinear>(model.LmHead); // the head stays dense, as bitsandbytes' skip list says
    }

    [Fact]
    public void Sharded_output_loads_like_a_single_file()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        var spec = new FourBitFormat(FourBitType.Nf4, BlockSize: 16);
        QuantizedCheckpoint.Write(dir["src"], dir["one"], spec);
        var summary = QuantizedCheckpoint.Write(dir["src"], dir["many"], spec, maxShardBytes: 256);
        Assert.True(summary.Files.Count > 3, string.Join(", ", summary.Files));
        Assert.True(File.Exists(Path.Combine(dir["many"], CheckpointReader.IndexFile)));
        var options = new LoadOptions(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32));
        using var one = LlamaLoader.Load(dir["one"], options);
        using var many = LlamaLoader.Load(dir["many"], options);
        using var ids = tensor(new long[] { 1, 5, 7, 2 }).unsqueeze(0);
        using var a = one.forward(ids);
        using var b = many.forward(ids);
        Assert.True(Bits.Same(a, b));
    }

    [Fact]
    public void Missing_quant_state_is_named()
    {
        string key = "model.layers.0.mlp.gate_proj.weight.quant_state.bitsandbytes__nf4";
        var msg = BadLoad(tensors: t => t.Remove(key));
        Assert.Contains(key, msg);
    }

    [Fact]
    public void Packed_size_not_matching_the_config_is_named()
    {
        var msg = BadLoad(config: c => c["intermediate_size"] = 16);
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", msg);
        Assert.Contains("config.json implies [16, 8]", msg);
    }

    [Fact]
    public void Quant_state_disagreeing_with_its_tensors_is_named()
    {
        string key = "model.layers.0.self_attn.q_proj.weight.absmax";
        var msg = BadLoad(tensors: t => t[key] = ones(3));
        Assert.Contains(key, msg);
        Assert.Contains("quant_state implies 4", msg);
    }

    [Fact]
    public void Quant_state_shape_not_matching_the_config_is_named()
    {
        // q_proj [8, 8] and o_proj [8, 8] have equal sizes: swap in a quant_state that claims [4, 16].
        string key = "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4";
        var msg = BadLoad(tensors: t => t[key] = tensor(System.Text.Encoding.UTF8.GetBytes(
            "{\"quant_type\": \"nf4\", \"blocksize\": 16, \"dtype\": \"bfloat16\", \"shape\": [4, 16]}")));
        Assert.Contains(key, msg);
        Assert.Contains("config.json implies [8, 8]", msg);
    }

    [Fact]
    public void Quantizing_a_quantized_checkpoint_is_refused()
    {
        using var dir = Paths.Temp();
        var e = Assert.Throws<InvalidDataException>(() => QuantizedCheckpoint.Write(quantized.Dir, dir["again"], new FourBitFormat(FourBitType.Nf4)));
        Assert.Contains("already a quantized checkpoint", e.Message);
        Assert.False(Directory.Exists(dir["again"]));
    }
}
