using QLoraNet.Formats;

namespace QLoraNet.Tests.Formats;

/// <summary>Sizes in config.json are checked against sane limits and each other before any tensor is built.</summary>
[Trait("tier", "unit")]
public class ConfigLimitsTests
{
    const string Llama2 = """
        {"architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":11008,"num_attention_heads":32,
         "num_hidden_layers":32,"num_key_value_heads":32,"vocab_size":32000,"rms_norm_eps":1e-05,"model_type":"llama",
         "max_position_embeddings":4096,"tie_word_embeddings":false,"torch_dtype":"float16","bos_token_id":1,"eos_token_id":2}
        """;

    static string Error(string field, string value)
    {
        using var tmp = Paths.Temp();
        string json = System.Text.RegularExpressions.Regex.Replace(Llama2, $"\"{field}\":[^,}}]+", $"\"{field}\":{value}");
        if (!json.Contains($"\"{field}\"")) json = json.Replace("{\"architectures\"", $"{{\"{field}\":{value},\"architectures\"");
        File.WriteAllText(tmp["config.json"], json);
        var e = Assert.Throws<InvalidDataException>(() => ModelFamilies.Load(tmp.Path));
        Assert.Contains(tmp["config.json"], e.Message);
        Assert.DoesNotContain("\n", e.Message);
        return e.Message;
    }

    [Theory]
    [InlineData("num_hidden_layers", "2147483647", "num_hidden_layers 2147483647 is out of range")]
    [InlineData("num_hidden_layers", "0", "num_hidden_layers 0 is out of range")]
    [InlineData("vocab_size", "-5", "vocab_size -5 is out of range")]
    [InlineData("hidden_size", "2147483647", "hidden_size 2147483647 is out of range")]
    [InlineData("num_attention_heads", "0", "num_attention_heads 0 is out of range")]
    [InlineData("num_key_value_heads", "5", "not a multiple of num_key_value_heads 5")]
    [InlineData("head_dim", "7", "head_dim 7 is odd")]
    [InlineData("head_dim", "100000", "head_dim 100000 is out of range")]
    [InlineData("num_hidden_layers", "1e12", "'num_hidden_layers' must be an integer")]
    [InlineData("num_hidden_layers", "\"32\"", "'num_hidden_layers' must be an integer")]
    [InlineData("rms_norm_eps", "-1", "'rms_norm_eps' must be a positive finite number")]
    [InlineData("eos_token_id", "[2, 99999999]", "'eos_token_id' 99999999 is not a token id")]
    [InlineData("eos_token_id", "2.5", "'eos_token_id' 2.5 is not a token id")]
    [InlineData("architectures", "[1, null]", "architecture 1, null is not supported")]
    public void Absurd_or_inconsistent_sizes_are_one_line_errors_naming_the_field(string field, string value, string expected)
    {
        if (field == "architectures")
        {
            using var tmp = Paths.Temp();
            File.WriteAllText(tmp["config.json"], Llama2.Replace("[\"LlamaForCausalLM\"]", value).Replace("\"model_type\":\"llama\"", "\"model_type\":\"x\""));
            Assert.Contains(expected, Assert.Throws<NotSupportedException>(() => ModelFamilies.Load(tmp.Path)).Message);
            return;
        }
        Assert.Contains(expected, Error(field, value));
    }

    [Fact]
    public void Sizes_that_are_each_in_range_but_overflow_together_are_refused()
    {
        Assert.Throws<InvalidDataException>(() => ConfigLimits.Check("c.json", ConfigLimits.MaxVocab, ConfigLimits.MaxHidden,
            ConfigLimits.MaxIntermediate, ConfigLimits.MaxLayers, ConfigLimits.MaxHeads, 1, ConfigLimits.MaxHeadDim, 4096));
        var e = Assert.Throws<InvalidDataException>(() => ConfigLimits.Check("c.json", 32000, 65536, 1 << 20, 1024, 64, 64, null, 4096));
        Assert.Contains("parameters", e.Message);
        ConfigLimits.Check("c.json", 128256, 16384, 53248, 126, 128, 8, null, 131072);  // Llama 3.1 405B is fine
    }

    [Fact]
    public void A_config_with_two_billion_layers_fails_in_the_cli_at_once_with_one_line()
    {
        using var tmp = Paths.Temp();
        foreach (var f in Directory.GetFiles(Paths.TinyModel)) File.Copy(f, tmp[Path.GetFileName(f)]);
        File.WriteAllText(tmp["config.json"], File.ReadAllText(tmp["config.json"]).Replace("\"num_hidden_layers\": 4", "\"num_hidden_layers\": 2147483647"));
        Assert.Contains("2147483647", File.ReadAllText(tmp["config.json"]));
        var (code, _, err) = CliRunner.Run("generate", "--model", tmp.Path, "--prompt", "hi", "--max-new-tokens", "1", "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains("num_hidden_layers 2147483647 is out of range", err);
        Assert.Single(err.Trim().Split('\n'));
    }
}

/// <summary>The model directory's JSON files: bounded, UTF-8, no duplicate keys, one line naming the file.</summary>
[Trait("tier", "unit")]
public class ModelJsonFileTests
{
    [Theory]
    [InlineData("{\"hidden_size\": 8, \"hidden_size\": 16}", "Duplicate property 'hidden_size'")]
    [InlineData("{\"a\": \"\xff\"}", "not valid UTF-8")]
    [InlineData("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "depth")]
    [InlineData("{\"architectures\": \"LlamaForCausalLM\", \"model_type\": \"llama\", \"hidden_size\": {}}", "'hidden_size' must be an integer")]
    public void Bad_config_json_is_one_line_naming_the_file(string json, string expected)
    {
        using var tmp = Paths.Temp();
        File.WriteAllBytes(tmp["config.json"], System.Text.Encoding.Latin1.GetBytes(json));
        var e = Assert.ThrowsAny<Exception>(() => ModelFamilies.Load(tmp.Path));
        Assert.Contains(tmp["config.json"], e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Config_json_that_is_a_fifo_or_too_big_is_refused_without_blocking()
    {
        using var tmp = Paths.Temp();
        File.WriteAllText(tmp["config.json"], "{\"x\": \"" + new string('y', (int)UserFile.MaxJsonBytes) + "\"}");
        Assert.Contains("limit", Assert.Throws<InvalidDataException>(() => ModelFamilies.Load(tmp.Path)).Message);
        if (OperatingSystem.IsWindows()) return;
        File.Delete(tmp["config.json"]);
        using (var p = System.Diagnostics.Process.Start("mkfifo", tmp["config.json"])) p.WaitForExit();
        var error = Bounded.Within(TimeSpan.FromSeconds(30), "reading a FIFO config.json blocked",
            () => Assert.ThrowsAny<Exception>(() => ModelFamilies.Load(tmp.Path)));
        Assert.Contains("FIFO", error.Message);
    }
}
