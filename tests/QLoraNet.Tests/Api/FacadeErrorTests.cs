namespace QLoraNet.Tests.Api;

/// <summary>The facade's bad input: the CLI's one-line messages, as exceptions of the documented types.</summary>
[Trait("tier", "unit")]
public class FacadeErrorTests
{
    [Fact]
    public void An_unknown_config_key_is_a_config_exception_with_the_cli_message()
    {
        string file = Path.Combine(Path.GetTempPath(), $"qln-{Guid.NewGuid():N}.yaml");
        File.WriteAllText(file, "modle:\n  path: x\n");
        try
        {
            var e = Assert.Throws<QLoraNetConfigException>(() => FineTuning.LoadConfig(file));
            Assert.StartsWith($"{file}:1: unknown key 'modle'; valid keys at the top level: model, quantization, lora, data, training, output", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public async Task A_missing_config_file_is_a_config_exception_before_any_work()
    {
        await Assert.ThrowsAsync<QLoraNetConfigException>(() => FineTuning.RunAsync("/nonexistent/config.yaml"));
    }

    [Fact]
    public void A_missing_model_directory_is_a_model_exception_with_the_cli_message()
    {
        var e = Assert.Throws<QLoraNetModelException>(() => LanguageModel.Load("/nonexistent/model"));
        Assert.Equal("model directory '/nonexistent/model' does not exist", e.Message);
    }

    [Fact]
    public async Task An_unknown_gguf_type_is_a_model_exception()
    {
        var e = await Assert.ThrowsAnyAsync<QLoraNetException>(() => ModelExport.ToGgufAsync(Paths.TinyModel, Path.Combine(Path.GetTempPath(), $"qln-{Guid.NewGuid():N}.gguf"), "q5_k"));
        Assert.Contains("q5_k", e.Message);
    }
}
