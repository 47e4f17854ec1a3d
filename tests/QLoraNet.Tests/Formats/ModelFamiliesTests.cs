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

    const string BitNet = """
        {"architectures":["BitNetForCausalLM"],"model_type":"bitnet","hidden_size":128,"intermediate_size":320,
         "num_attention_heads":4,"num_key_value_heads":2,"num_hidden_layers":3,"vocab_size":1024,"hidden_act":"relu2",
         "tie_word_embeddings":true,"quantization_config":{"linear_class":"autobitlinear","quant_method":"bitnet","quantization_mode":"offline"}}
        """;

    [Fact]
    public void Bitnet_has_squared_relu_sub_norms_of_both_widths_and_ternary_linears()
    {
        using var tmp = Paths.Temp();
        var a = FromText(BitNet, tmp);
        Assert.Equal("bitnet", a.Family);
        Assert.True(a.TernaryLinears);
        Assert.Equal(Activation.ReluSquared, a.Activation);
        Assert.Equal(500000.0, a.Rope.Theta);                               // BitNetConfig's default
        var shapes = a.ExpectedTensors().ToDictionary(e => e.Name, e => e.Shape);
        Assert.Equal([128L], shapes["model.layers.0.self_attn.attn_sub_norm.weight"]);
        Assert.Equal([320L], shapes["model.layers.2.mlp.ffn_sub_norm.weight"]);
        // embeddings (tied) + per layer: q 128x128, k/v 64x128, o 128x128, gate/up/down 3x320x128, norms 128+128+128+320; final norm
        Assert.Equal(1024L * 128 + 3 * (128 * 128 * 2 + 64 * 128 * 2 + 3 * 320 * 128 + 128 * 3 + 320) + 128, a.ParameterCount);
    }

    [Fact]
    public void Bitnet_refuses_the_inverse_scale_linear_class_and_other_activations()
    {
        Assert.Contains("linear_class 'bitlinear' is not supported", Refusal(BitNet.Replace("\"autobitlinear\"", "\"bitlinear\"")));
        Assert.Contains("hidden_act 'silu' is not supported (BitNet uses relu2)", Refusal(BitNet.Replace("relu2", "silu")));
        Assert.Contains("quant_method 'bitsandbytes'", Refusal(BitNet.Replace("\"bitnet\",\"quantization_mode", "\"bitsandbytes\",\"quantization_mode")));
    }

    /// <summary>BitNet reads Llama's shared fields through Llama's parser and replaces only its own: the defaults of
    /// BitNetConfig, bias-free BitLinears (an mlp_bias key does not add biases), the sub-norms.</summary>
    [Fact]
    public void Bitnet_shares_llamas_fields_and_keeps_its_own_defaults()
    {
        using var tmp = Paths.Temp();
        string extra = "\"mlp_bias\":true,\"max_position_embeddings\":4096,\"torch_dtype\":\"bfloat16\",";
        var b = FromText(BitNet.Replace("{\"architectures\"", "{" + extra + "\"architectures\""), tmp);
        var l = FromText(BitNet.Replace("{\"architectures\"", "{" + extra + "\"architectures\"").Replace("BitNetForCausalLM", "LlamaForCausalLM")
            .Replace("\"bitnet\",\"hidden_size", "\"llama\",\"hidden_size").Replace("relu2", "silu").Replace(",\"quantization_config\":{\"linear_class\":\"autobitlinear\",\"quant_method\":\"bitnet\",\"quantization_mode\":\"offline\"}", ""), tmp);
        Assert.Equal(("llama", "bitnet"), (l.Family, b.Family));
        Assert.Equal((l.NumLayers, l.Hidden, l.Intermediate, l.NumHeads, l.NumKvHeads, l.HeadDim, l.VocabSize, l.MaxPositions, l.Norm, l.TiedHead, l.TorchDtype),
            (b.NumLayers, b.Hidden, b.Intermediate, b.NumHeads, b.NumKvHeads, b.HeadDim, b.VocabSize, b.MaxPositions, b.Norm, b.TiedHead, b.TorchDtype));
        Assert.Equal((1e-6, 10000.0, 1, 2), (l.NormEps, l.Rope.Theta, l.Tokens.Bos, l.Tokens.Eos.Single()));
        Assert.Equal((1e-5, 500000.0, 128000, 128001), (b.NormEps, b.Rope.Theta, b.Tokens.Bos, b.Tokens.Eos.Single()));
        Assert.Contains(l.LayerLinears, x => x.HasBias);
        Assert.DoesNotContain(b.LayerLinears, x => x.HasBias);
        Assert.Equal(l.LayerLinears.Select(x => (x.Path, x.OutFeatures, x.InFeatures)), b.LayerLinears.Select(x => (x.Path, x.OutFeatures, x.InFeatures)));
        Assert.Equal(4, b.LayerNorms.Count);
        Assert.Equal(2, l.LayerNorms.Count);
        // One difference from before the shared parser: a non-positive rms_norm_eps is refused for BitNet as for Llama.
        var eps = Assert.Throws<InvalidDataException>(() => FromText(BitNet.Replace("{\"architectures\"", "{\"rms_norm_eps\":0,\"architectures\""), tmp));
        Assert.Contains("'rms_norm_eps' must be a positive finite number", eps.Message);
    }
}
