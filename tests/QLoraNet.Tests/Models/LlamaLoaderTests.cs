using QLoraNet.Models;
using QLoraNet.Quant;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Models;

[Trait("tier", "unit")]
public class LlamaLoaderTests
{
    static LoadOptions Fp32(Func<string, Tensor, FrozenLinear>? factory = null) =>
        new(CPU, ScalarType.Float32, factory ?? ((_, w) => new DenseFrozenLinear(w, ScalarType.Float32)));

    static string LoadError(Action<System.Text.Json.Nodes.JsonObject>? config = null, Action<Dictionary<string, Tensor>>? tensors = null)
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path, config, tensors);
        var e = Assert.ThrowsAny<Exception>(() => LlamaLoader.Load(dir.Path, Fp32()));
        Assert.DoesNotContain("\n", e.Message);
        return e.Message;
    }

    [Fact]
    public void Untied_checkpoint_loads_and_the_head_is_the_lm_head_weight()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path);
        var seen = new List<(string Name, long[] Shape, ScalarType DType)>();
        using var model = LlamaLoader.Load(dir.Path, Fp32((name, w) =>
        {
            seen.Add((name, w.shape, w.dtype));
            return new DenseFrozenLinear(w, ScalarType.Float32);
        }));

        // The policy sees every projection by module path, in its stored dtype, once.
        Assert.Equal(8, seen.Count);
        Assert.Contains(seen, s => s.Name == "model.layers.0.self_attn.k_proj" && s.Shape.SequenceEqual(new long[] { 4, 8 }));
        Assert.Contains(seen, s => s.Name == "lm_head");
        Assert.All(seen, s => Assert.Equal(ScalarType.BFloat16, s.DType));

        using var ids = tensor(new long[] { 1, 5, 7 }, [1, 3]);
        using var logits = model.forward(ids);
        Assert.Equal(new long[] { 1, 3, SyntheticLlama.Vocab }, logits.shape);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        Assert.NotNull(model.LmHead);
        using var h = randn(2, SyntheticLlama.Hidden);
        using var expected = h.matmul(model.LmHead!.DequantizeWeight(ScalarType.Float32).t());
        Assert.True(model.Logits(h).allclose(expected));
    }

    [Fact]
    public void Missing_tensor_names_the_key_and_the_directory()
    {
        var msg = LoadError(tensors: t => t.Remove("model.layers.0.mlp.up_proj.weight"));
        Assert.Contains("model.layers.0.mlp.up_proj.weight", msg);
        Assert.Contains("qln-test-", msg);
    }

    [Fact]
    public void Wrong_shape_names_the_key_and_both_shapes()
    {
        var msg = LoadError(tensors: t => t["model.layers.0.self_attn.v_proj.weight"] = zeros([8, 8], ScalarType.BFloat16));
        Assert.Contains("model.layers.0.self_attn.v_proj.weight", msg);
        Assert.Contains("[8, 8]", msg);
        Assert.Contains("[4, 8]", msg);
    }

    [Fact]
    public void Unexpected_tensor_is_refused_but_rotary_inv_freq_is_ignored()
    {
        var msg = LoadError(tensors: t => t["model.layers.0.self_attn.q_proj.bias"] = zeros(8));
        Assert.Contains("unexpected tensor 'model.layers.0.self_attn.q_proj.bias'", msg);

        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path, editTensors: t => t["model.layers.0.self_attn.rotary_emb.inv_freq"] = ones(2));
        using var model = LlamaLoader.Load(dir.Path, Fp32());
    }

    [Fact]
    public void Untied_config_without_lm_head_says_what_to_do()
    {
        var msg = LoadError(tensors: t => t.Remove("lm_head.weight"));
        Assert.Contains("lm_head.weight", msg);
        Assert.Contains("tie_word_embeddings", msg);
    }

    [Fact]
    public void Prequantized_integer_weights_are_refused()
    {
        var msg = LoadError(tensors: t => t["model.layers.0.mlp.gate_proj.weight"] = zeros([12, 8], ScalarType.Int8));
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", msg);
        Assert.Contains("pre-quantized", msg);
    }

    [Fact]
    public void Missing_config_field_is_named()
    {
        var msg = LoadError(config: c => c.Remove("intermediate_size"));
        Assert.Contains("intermediate_size", msg);
        Assert.Contains("config.json", msg);
    }

    [Fact]
    public void Unsupported_architectures_are_refused_by_name()
    {
        var phi3 = LoadError(config: c => { c["architectures"] = new System.Text.Json.Nodes.JsonArray("Phi3ForCausalLM"); c["model_type"] = "phi3"; });
        Assert.Contains("Phi3ForCausalLM", phi3);
        var classifier = LoadError(config: c => c["architectures"] = new System.Text.Json.Nodes.JsonArray("LlamaForSequenceClassification"));
        Assert.Contains("LlamaForSequenceClassification", classifier);
    }

    [Fact]
    public void Missing_directory_config_or_weights_are_one_line_errors_naming_the_path()
    {
        using var dir = Paths.Temp();
        string absent = Path.Combine(dir.Path, "nope");
        Assert.Contains(absent, Assert.ThrowsAny<Exception>(() => LlamaLoader.Load(absent, Fp32())).Message);
        Assert.Contains(Path.Combine(dir.Path, "config.json"), Assert.ThrowsAny<Exception>(() => LlamaLoader.Load(dir.Path, Fp32())).Message);
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), SyntheticLlama.Config().ToJsonString());
        var noWeights = Assert.ThrowsAny<Exception>(() => LlamaLoader.Load(dir.Path, Fp32())).Message;
        Assert.Contains(dir.Path, noWeights);
        Assert.Contains("model.safetensors", noWeights);
    }

    [Fact]
    public void The_model_exposes_the_records_linears_as_slots_by_path()
    {
        using var dir = Paths.Temp();
        SyntheticLlama.Write(dir.Path);
        using var model = LlamaLoader.Load(dir.Path, Fp32());
        var arch = model.Architecture;
        Assert.Equal(arch.BaseLinearPaths.Append(arch.HeadName), model.LinearPaths);
        Assert.Equal("lm_head", model.HeadPath);
        Assert.IsType<DenseFrozenLinear>(model.GetLinear("model.layers.0.mlp.up_proj"));
        var e = Assert.Throws<ArgumentException>(() => model.GetLinear("model.layers.0.mlp.w1"));
        Assert.Contains("no linear 'model.layers.0.mlp.w1'", e.Message);

        // A replaced slot is what forward uses and what named_modules lists.
        using var ids = tensor(new long[] { 1, 5, 7 }, [1, 3]);
        using var before = model.forward(ids);
        model.ReplaceLinear("model.layers.0.self_attn.o_proj", new DenseFrozenLinear(zeros(SyntheticLlama.Hidden, SyntheticLlama.Heads * SyntheticLlama.HeadDim), ScalarType.Float32));
        using var after = model.forward(ids);
        Assert.False(after.allclose(before));
        Assert.Contains(model.named_modules(), m => m.name == "model.layers.0.self_attn.o_proj" && m.module is DenseFrozenLinear d && d.DequantizeWeight(ScalarType.Float32).abs().sum().item<float>() == 0);
    }

    [Fact]
    public void Attention_biases_from_the_record_are_loaded_and_added()
    {
        using var plain = Paths.Temp();
        SyntheticLlama.Write(plain.Path);
        using var zeroBias = Paths.Temp();
        var biases = new[] { ("q_proj", SyntheticLlama.Heads * SyntheticLlama.HeadDim), ("k_proj", SyntheticLlama.KvHeads * SyntheticLlama.HeadDim),
            ("v_proj", SyntheticLlama.KvHeads * SyntheticLlama.HeadDim), ("o_proj", SyntheticLlama.Hidden) };
        SyntheticLlama.Write(zeroBias.Path, c => c["attention_bias"] = true,
            t => { foreach (var (n, size) in biases) t[$"model.layers.0.self_attn.{n}.bias"] = zeros(size, ScalarType.BFloat16); });
        using var withBias = Paths.Temp();
        SyntheticLlama.Write(withBias.Path, c => c["attention_bias"] = true,
            t => { foreach (var (n, size) in biases) t[$"model.layers.0.self_attn.{n}.bias"] = ones(size, ScalarType.BFloat16); });

        using var ids = tensor(new long[] { 1, 5, 7 }, [1, 3]);
        using var a = LlamaLoader.Load(plain.Path, Fp32());
        using var b = LlamaLoader.Load(zeroBias.Path, Fp32());
        using var c = LlamaLoader.Load(withBias.Path, Fp32());
        using var la = a.forward(ids);
        using var lb = b.forward(ids);
        using var lc = c.forward(ids);
        Assert.True(la.eq(lb).all().item<bool>());     // a zero bias changes nothing
        Assert.False(la.allclose(lc));                  // a real one does
        Assert.Contains("missing tensor 'model.layers.0.self_attn.q_proj.bias'", LoadError(config: c => c["attention_bias"] = true));
    }
}
