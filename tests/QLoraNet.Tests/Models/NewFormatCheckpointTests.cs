using System.Text.Json.Nodes;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Quant;
using QLoraNet.Tests.Peft;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

/// <summary>
/// `quantize` outputs in the llm-int8 (bitsandbytes 8-bit), hqq and ternary (BitNet) layouts: their keys and config
/// blocks, loading back bit-identical to quantizing on load, and the one-line errors for broken ones. The synthetic
/// one-layer model keeps them fast (groups of 8 for hqq).
/// </summary>
[Trait("tier", "unit")]
public class NewFormatCheckpointTests
{
    static readonly LoadOptions Dense = new(CPU, ScalarType.Float32, (_, w) => new DenseFrozenLinear(w, ScalarType.Float32));

    static LoadOptions OnLoad(string dir, BaseFormat format) =>
        new(CPU, ScalarType.Float32, LinearPolicies.Quantized(ModelFamilies.Load(dir), format, ScalarType.Float32, CPU, ScalarType.Float32));

    static readonly long[] Ids = [1, 5, 7, 2, 9, 3];

    [Theory]
    [InlineData("llm-int8")]
    [InlineData("llm-int8-t0.5")]
    [InlineData("hqq8-g8")]
    [InlineData("hqq4-g8")]
    [InlineData("hqq3-g8")]
    [InlineData("hqq2-g8")]
    [InlineData("ternary")]
    public void A_stored_checkpoint_loads_back_bit_identical_to_quantizing_on_load(string spelling)
    {
        using var dir = Paths.Temp();
        var format = BaseFormat.Parse(spelling);
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], format);
        Assert.Equal(format, QuantizedCheckpoint.StoredFormat(dir["q"]));

        using var onLoad = LlamaLoader.Load(dir["src"], OnLoad(dir["src"], format));
        using var stored = LlamaLoader.Load(dir["q"], Dense with
        {
            LinearFactory = (p, w) => p == "lm_head" ? new DenseFrozenLinear(w.to(ScalarType.Float32), ScalarType.Float32) : throw new InvalidOperationException($"{p} was quantized again"),
        });
        var a = onLoad.named_modules().Where(m => m.module is FrozenLinear f && f.FormatName == format.ToString()).ToList();
        var b = stored.named_modules().Where(m => m.module is FrozenLinear).ToDictionary(m => m.name, m => (FrozenLinear)m.module);
        Assert.Equal(7, a.Count);
        foreach (var (name, module) in a)
        {
            using var wa = ((FrozenLinear)module).DequantizeWeight(ScalarType.Float32);
            using var wb = b[name].DequantizeWeight(ScalarType.Float32);
            Assert.True(Bits.Same(wa, wb), name);
            Assert.Equal(format.ToString(), b[name].FormatName);
        }
        using var ids = tensor(Ids).unsqueeze(0);
        using var la = onLoad.forward(ids);
        using var lb = stored.forward(ids);
        Assert.True(Bits.Same(la, lb));
    }

    static JsonObject Config(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["quantization_config"]!.AsObject();

    [Fact]
    public void Llm_int8_is_stored_under_bitsandbytes_8bit_keys_with_its_threshold_in_the_config()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], BaseFormat.Parse("llm-int8-t4"));
        using var ckpt = CheckpointReader.Open(dir["q"]);
        const string p = "model.layers.0.mlp.gate_proj.";
        Assert.Equal(ScalarType.Int8, ckpt.Info(p + "weight").DType);
        Assert.Equal(new long[] { 12, 8 }, ckpt.Info(p + "weight").Shape);
        Assert.Equal(ScalarType.Float32, ckpt.Info(p + "SCB").DType);
        Assert.Equal(new long[] { 12 }, ckpt.Info(p + "SCB").Shape);
        Assert.Equal(ScalarType.Byte, ckpt.Info(p + "weight_format").DType);
        Assert.Empty(ckpt.Info(p + "weight_format").Shape);
        Assert.Equal(ScalarType.BFloat16, ckpt.Info("lm_head.weight").DType);
        var q = Config(dir["q"]);
        Assert.Equal("bitsandbytes", (string?)q["quant_method"]);
        Assert.True((bool)q["load_in_8bit"]!);
        Assert.False((bool)q["load_in_4bit"]!);
        Assert.Equal("lm_head", (string?)q["llm_int8_skip_modules"]![0]);
        Assert.Equal("4.0", q["llm_int8_threshold"]!.ToJsonString());   // a Python float, as transformers requires
    }

    [Fact]
    public void Hqq_is_stored_under_hqqs_own_state_dict_keys()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], BaseFormat.Parse("hqq4-g8"));
        using var ckpt = CheckpointReader.Open(dir["q"]);
        const string p = "model.layers.0.mlp.gate_proj.";
        Assert.False(ckpt.Contains(p + "weight"));
        Assert.Equal(new long[] { 6, 8 }, ckpt.Info(p + "W_q").Shape);              // 12 groups of 8, two 4-bit halves
        Assert.Equal(ScalarType.Float16, ckpt.Info(p + "scale").DType);
        Assert.Equal(new long[] { 12, 1 }, ckpt.Info(p + "zero").Shape);
        Assert.Equal(ScalarType.Int32, ckpt.Info(p + "nbits").DType);
        Assert.Equal(new long[] { 12, 8 }, ckpt.Read(p + "shape").data<long>().ToArray());
        Assert.Equal("4bit_u8", System.Text.Encoding.ASCII.GetString(ckpt.Read(p + "packing").data<byte>().ToArray()));
        Assert.Equal(19, ckpt.Names.Count(n => n.StartsWith(p, StringComparison.Ordinal)));
        var q = Config(dir["q"]);
        Assert.Equal("hqq", (string?)q["quant_method"]);
        Assert.Equal(4, (int)q["quant_config"]!["weight_quant_params"]!["nbits"]!);
        Assert.Equal(8, (int)q["quant_config"]!["weight_quant_params"]!["group_size"]!);
        Assert.Equal(1, (int)q["quant_config"]!["weight_quant_params"]!["axis"]!);
        Assert.Equal("lm_head", (string?)q["skip_modules"]![0]);
    }

    [Fact]
    public void Ternary_is_stored_in_the_bitnet_layout()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], BaseFormat.Parse("ternary"));
        using var ckpt = CheckpointReader.Open(dir["q"]);
        const string p = "model.layers.0.mlp.gate_proj.";
        Assert.Equal(ScalarType.Byte, ckpt.Info(p + "weight").DType);
        Assert.Equal(new long[] { 3, 8 }, ckpt.Info(p + "weight").Shape);
        Assert.Equal(ScalarType.BFloat16, ckpt.Info(p + "weight_scale").DType);
        var q = Config(dir["q"]);
        Assert.Equal("bitnet", (string?)q["quant_method"]);
        Assert.Equal("autobitlinear", (string?)q["linear_class"]);
        Assert.Equal("offline", (string?)q["quantization_mode"]);
    }

    /// <summary>The synthetic model stored in <paramref name="spelling"/>, then edited; the load's one-line error.</summary>
    static string BadLoad(string spelling, Action<JsonObject>? config = null, Action<Dictionary<string, Tensor>>? tensors = null)
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(Directory.CreateDirectory(dir["src"]).FullName);
        QuantizedCheckpoint.Write(dir["src"], dir["q"], BaseFormat.Parse(spelling));
        string file = Path.Combine(dir["q"], "model.safetensors");
        Dictionary<string, Tensor> all;
        using (var st = SafeTensorsFile.Open(file)) all = st.Names.ToDictionary(n => n, st.Read);
        tensors?.Invoke(all);
        SafeTensors.Write(file, all);
        if (config != null)
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir["q"], "config.json")))!.AsObject();
            config(json);
            File.WriteAllText(Path.Combine(dir["q"], "config.json"), json.ToJsonString());
        }
        var e = Assert.ThrowsAny<Exception>(() => LlamaLoader.Load(dir["q"], Dense));
        Assert.DoesNotContain("\n", e.Message);
        return e.Message;
    }

    [Fact]
    public void An_8bit_checkpoint_with_a_missing_scb_is_named()
    {
        var msg = BadLoad("llm-int8", tensors: t => t.Remove("model.layers.0.self_attn.k_proj.SCB"));
        Assert.Contains("'model.layers.0.self_attn.k_proj.SCB'", msg);
        Assert.Contains("int8 tensor 'model.layers.0.self_attn.k_proj.weight'", msg);
        // Without weight_format either, the int8 weight alone is still recognised and the SCB asked for.
        msg = BadLoad("llm-int8", tensors: t =>
        {
            t.Remove("model.layers.0.self_attn.k_proj.SCB");
            t.Remove("model.layers.0.self_attn.k_proj.weight_format");
        });
        Assert.Contains("model.layers.0.self_attn.k_proj.SCB", msg);
    }

    [Fact]
    public void A_threshold_of_zero_in_the_config_is_refused()
    {
        var msg = BadLoad("llm-int8", config: c => c["quantization_config"]!["llm_int8_threshold"] = 0.0);
        Assert.Contains("llm_int8_threshold must be a number above 0", msg);
    }

    [Theory]
    [InlineData("llm-int8", "8-bit tensor 'model.layers.0.mlp.gate_proj.weight' is Int8 [12, 8], but config.json implies int8 [16, 8]")]
    [InlineData("hqq4-g8", "do not fit config.json's [16, 8]")]
    [InlineData("ternary", "ternary tensor 'model.layers.0.mlp.gate_proj.weight' is Byte [3, 8], but config.json implies [16, 8] = uint8 [4, 8]")]
    public void Packed_shapes_that_do_not_match_config_json_are_named(string spelling, string expected)
    {
        var msg = BadLoad(spelling, config: c => c["intermediate_size"] = 16);
        Assert.Contains(expected, msg);
    }

    [Fact]
    public void A_ternary_checkpoint_with_the_code_3_is_refused()
    {
        var msg = BadLoad("ternary", tensors: t =>
        {
            var w = t["model.layers.0.mlp.up_proj.weight"];
            w[1, 2] = tensor((byte)0xC0);   // bits 6-7 = 3: a weight of +2
        });
        Assert.Contains("'model.layers.0.mlp.up_proj.weight'", msg);
        Assert.Contains("code 3", msg);
    }

    [Fact]
    public void An_hqq_checkpoint_whose_shape_key_disagrees_is_named()
    {
        var msg = BadLoad("hqq2-g8", tensors: t => t["model.layers.0.self_attn.q_proj.shape"] = tensor(new long[] { 4, 16 }));
        Assert.Contains("'model.layers.0.self_attn.q_proj.shape' says [4, 16], config.json implies [8, 8]", msg);
    }
}
