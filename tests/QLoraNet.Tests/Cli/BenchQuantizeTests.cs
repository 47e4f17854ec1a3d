using System.Text.Json;

namespace QLoraNet.Tests.Cli;

/// <summary>`bench quantize` with a calibrated format: GPTQ's solver timed on a small layer shape on the CPU with each
/// column loop (the GPU run compares them at the 7B shape).</summary>
[Trait("tier", "e2e")]
public class BenchQuantizeTests
{
    [Theory]
    [InlineData("host")]
    [InlineData("device")]
    public void Gptq_layer_is_timed_with_the_chosen_column_loop(string columns)
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "quantize", "--quantization", "gptq4-g32", "--device", "cpu",
            "--hidden", "64", "--intermediate", "96", "--layers", "2", "--gptq-columns", columns);
        Assert.True(code == 0, stderr + stdout);
        var json = JsonDocument.Parse(stdout.Trim().Split('\n')[^1]).RootElement;
        Assert.Equal("gptq4-g32", json.GetProperty("quantization").GetString());
        Assert.Equal(columns, json.GetProperty("gptq_columns").GetString());
        Assert.True(json.GetProperty("layer_s").GetDouble() > 0);
    }

    [Fact]
    public void Unknown_column_loop_is_a_one_line_error()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "quantize", "--quantization", "gptq4", "--gptq-columns", "gpu");
        Assert.NotEqual(0, code);
        Assert.Contains("gpu", stderr);
    }
}
