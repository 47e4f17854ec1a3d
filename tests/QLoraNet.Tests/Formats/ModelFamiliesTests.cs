using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

[Trait("tier", "unit")]
public class ModelFamiliesTests
{
    const string Llama2 = """
        {"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":11008,"num_attention_heads":32,
         "num_hidden_layers":32,"num_key_value_heads":32,"vocab_size":32000,"rms_norm_eps":1e-05,"model_type":"llama",
         "max_position_embeddings":4096,"tie_word_embeddings":false,"torch_dtype":"float16","bos_token_id":1,"eos_token_id":2}
        """;

    static ModelArchitecture FromText(string json, TempDir tmp)
    {
        File.WriteAllText(tmp["config.json"], json);
        return ModelFamilies.Load(tmp.Path);
    }

    static string Refusal(string json)
    {
        using var tmp = Paths.Temp();
        var e = Assert.Throws<NotSupportedException>(() => FromText(json, tmp));
        Assert.DoesNotContain("\n", e.Message);
        Assert.Contains("config.json", e.Message);
        return e.Message;
    }

    [Fact]
    public void Tiny_model_config_with_rope_parameters()
    {
        var c = ModelFamilies.Load(Paths.TinyModel);
        Assert.Equal("llama", c.Family);
        Assert.Equal(256, c.Hidden);
        Assert.Equal(4, c.NumKvHeads);
        Assert.Equal(32, c.HeadDim);
        Assert.Equal(10000.0, c.Rope.Theta);
        Assert.True(c.TiedHead);
        Assert.Equal(11_094_272, c.ParameterCount);
        Assert.Equal(new SpecialTokenIds(1, [2], null).Bos, c.Tokens.Bos);
        Assert.Equal([2], c.Tokens.Eos);
    }

    [Fact]
    public void Llama2_config_without_rope_theta_means_10000_and_counts_6_7B()
    {
        using var tmp = Paths.Temp();
        var c = FromText(Llama2, tmp);
        Assert.Equal(10000.0, c.Rope.Theta);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(6_738_415_616, c.ParameterCount);
    }

    [Fact]
    public void The_record_lists_each_layer_linear_with_its_path_and_shape_and_names_the_head()
    {
        using var tmp = Paths.Temp();
        var c = FromText(Llama2.Replace("\"num_key_value_heads\":32", "\"num_key_value_heads\":8"), tmp);
        Assert.Equal(
            ["self_attn.q_proj 4096x4096", "self_attn.k_proj 1024x4096", "self_attn.v_proj 1024x4096", "self_attn.o_proj 4096x4096",
             "mlp.gate_proj 11008x4096", "mlp.up_proj 11008x4096", "mlp.down_proj 4096x11008"],
            c.LayerLinears.Select(l => $"{l.Path} {l.OutFeatures}x{l.InFeatures}"));
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], c.LinearNames);
        Assert.Equal("lm_head", c.HeadName);
        Assert.Equal(32 * 7, c.BaseLinearPaths.Count());
        Assert.Equal("model.layers.31.mlp.down_proj", c.BaseLinearPaths.Last());
        Assert.True(c.IsBaseLinearWeight("model.layers.3.mlp.up_proj.weight"));
        Assert.False(c.IsBaseLinearWeight("model.layers.3.mlp.up_proj.weight.absmax"));
        Assert.False(c.IsBaseLinearWeight("model.layers.32.mlp.up_proj.weight"));   // no such layer
        Assert.False(c.IsBaseLinearWeight("lm_head.weight"));
        Assert.False(c.IsBaseLinearWeight("model.layers.3.input_layernorm.weight"));
        var expected = c.ExpectedTensors();
        Assert.Equal(1 + 32 * 9 + 2, expected.Count);
        Assert.Contains(expected, e => e.Name == "lm_head.weight" && e.Role == TensorRole.Head && e.Shape.SequenceEqual(new long[] { 32000, 4096 }));
    }

    [Fact]
    public void Biases_are_per_linear_flags_with_their_own_tensors()
    {
        using var tmp = Paths.Temp();
        var c = FromText(Llama2.Replace("\"vocab_size\"", "\"attention_bias\":true,\"vocab_size\""), tmp);
        Assert.Equal([true, true, true, true, false, false, false], c.LayerLinears.Select(l => l.HasBias));
        Assert.Contains(c.ExpectedTensors(), e => e.Name == "model.layers.0.self_attn.k_proj.bias" && e.Shape.SequenceEqual(new long[] { 4096 }));
    }

    [Fact]
    public void Top_level_rope_theta_is_read()
    {
        using var tmp = Paths.Temp();
        Assert.Equal(500000.0, FromText(Llama2.Replace("\"vocab_size\"", "\"rope_theta\":500000.0,\"vocab_size\""), tmp).Rope.Theta);
    }

    [Theory]
    [InlineData("\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0},", "rope_scaling type 'linear'")]
    [InlineData("\"rope_scaling\":{\"rope_type\":\"longrope\",\"factor\":8.0},", "rope_scaling type 'longrope'")]
    [InlineData("\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":1e4},", "rope_parameters type 'yarn'")]
    [InlineData("\"hidden_act\":\"gelu\",", "hidden_act 'gelu'")]
    [InlineData("\"num_local_experts\":8,", "num_local_experts 8: mixture-of-experts")]
    public void Unimplemented_values_are_refused_by_name(string insert, string expected) =>
        Assert.Contains(expected, Refusal(Llama2.Replace("\"vocab_size\"", insert + "\"vocab_size\"")));

    [Fact]
    public void Unknown_families_are_refused_by_name_listing_the_supported_ones()
    {
        var phi3 = Refusal(Llama2.Replace("LlamaForCausalLM", "Phi3ForCausalLM").Replace("\"llama\"", "\"phi3\""));
        Assert.Contains("architecture Phi3ForCausalLM is not supported", phi3);
        Assert.Contains("LlamaForCausalLM (model_type \"llama\")", phi3);
        Assert.Contains("Gemma2ForCausalLM (model_type \"gemma2\")", phi3);
        Assert.Contains("model_type 'gpt2' is not supported", Refusal("""{"model_type":"gpt2","hidden_size":8}"""));
        // A known model_type with an architecture its family does not load (a classification head) is refused too.
        Assert.Contains("the llama family loads LlamaForCausalLM", Refusal(Llama2.Replace("LlamaForCausalLM", "LlamaForSequenceClassification")));
    }

    [Fact]
    public void The_registry_finds_families_by_model_type_or_architecture()
    {
        Assert.Equal("llama", ModelFamilies.Find("llama", [])!.Name);
        Assert.Equal("llama", ModelFamilies.Find("", ["LlamaForCausalLM"])!.Name);
        Assert.Equal("qwen2", ModelFamilies.Find("qwen2", ["Qwen2ForCausalLM"])!.Name);
        Assert.Equal("gemma2", ModelFamilies.Find("", ["Gemma2ForCausalLM"])!.Name);
        Assert.Null(ModelFamilies.Find("phi3", ["Phi3ForCausalLM"]));
    }

    [Fact]
    public void Missing_required_field_names_the_field_and_file()
    {
        using var tmp = Paths.Temp();
        var e = Assert.Throws<InvalidDataException>(() => FromText(Llama2.Replace("\"hidden_size\":4096,", ""), tmp));
        Assert.Contains("hidden_size", e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Missing_config_is_an_error_naming_the_path()
    {
        using var tmp = Paths.Temp();
        Assert.Contains("config.json", Assert.Throws<FileNotFoundException>(() => ModelFamilies.Load(tmp.Path)).Message);
    }
}
