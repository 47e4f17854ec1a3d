using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

[Trait("tier", "unit")]
public class LlamaConfigTests
{
    const string Llama2 = """
        {"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":11008,"num_attention_heads":32,
         "num_hidden_layers":32,"num_key_value_heads":32,"vocab_size":32000,"rms_norm_eps":1e-05,"model_type":"llama",
         "max_position_embeddings":4096,"tie_word_embeddings":false,"torch_dtype":"float16","bos_token_id":1,"eos_token_id":2}
        """;

    static LlamaConfig FromText(string json, TempDir tmp)
    {
        File.WriteAllText(tmp["config.json"], json);
        return LlamaConfig.Load(tmp.Path);
    }

    [Fact]
    public void Tiny_model_config_with_rope_parameters()
    {
        var c = LlamaConfig.Load(Paths.TinyModel);
        Assert.Equal(256, c.HiddenSize);
        Assert.Equal(4, c.NumKeyValueHeads);
        Assert.Equal(32, c.HeadDim);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal(11_094_272, c.ParameterCount);
    }

    [Fact]
    public void Llama2_config_without_rope_theta_means_10000_and_counts_6_7B()
    {
        using var tmp = Paths.Temp();
        var c = FromText(Llama2, tmp);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(6_738_415_616, c.ParameterCount);
    }

    [Fact]
    public void Top_level_rope_theta_is_read()
    {
        using var tmp = Paths.Temp();
        Assert.Equal(500000.0, FromText(Llama2.Replace("\"vocab_size\"", "\"rope_theta\":500000.0,\"vocab_size\""), tmp).RopeTheta);
    }

    [Theory]
    [InlineData("\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0},", "rope_scaling type 'linear'")]
    [InlineData("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0},", "rope_scaling type 'llama3'")]
    [InlineData("\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":1e4},", "rope_parameters type 'yarn'")]
    public void Unimplemented_rope_scaling_is_refused_by_name(string insert, string expected)
    {
        using var tmp = Paths.Temp();
        var e = Assert.Throws<NotSupportedException>(() => FromText(Llama2.Replace("\"vocab_size\"", insert + "\"vocab_size\""), tmp));
        Assert.Contains(expected, e.Message);
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
    public void Unsupported_architecture_is_refused()
    {
        using var tmp = Paths.Temp();
        var e = Assert.Throws<NotSupportedException>(() => FromText(Llama2.Replace("LlamaForCausalLM", "MistralForCausalLM").Replace("\"llama\"", "\"mistral\""), tmp));
        Assert.Contains("MistralForCausalLM", e.Message);
    }

    [Fact]
    public void Missing_config_is_an_error_naming_the_path()
    {
        using var tmp = Paths.Temp();
        Assert.Contains("config.json", Assert.Throws<FileNotFoundException>(() => LlamaConfig.Load(tmp.Path)).Message);
    }
}
