using System.Text.Json;

namespace QLoraNet.Tests.Cli;

/// <summary>`bench kernel --smoke`: the benchmark's own code (inputs, bounds, comparisons, JSON) on the CPU, where the
/// ops take their reference paths, so every check must pass; the GPU run is the same code at full size.</summary>
[Trait("tier", "e2e")]
public class BenchKernelTests
{
    [Fact]
    public void Smoke_run_prints_one_json_object_per_line_and_no_failure()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "kernel", "--smoke", "--only", "rmsnorm,rope,glu,dropout,adamw,ce,lora");
        Assert.True(code == 0, stderr + stdout);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var objects = lines.Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var kernels = objects.Where(o => o.TryGetProperty("kernel", out _)).Select(o => o.GetProperty("kernel").GetString()).Distinct().ToList();
        Assert.Equal(["rmsnorm", "rmsnorm_residual", "rmsnorm_gemma", "rope_qk", "swiglu", "geglu_tanh", "swiglu_strided", "lora_dropout", "adamw_multi_tensor", "adamw_guard", "chunked_cross_entropy", "fused_cross_entropy", "fused_cross_entropy_loss", "lora_addmm", "lora_weight_gradient"], kernels);
        var summary = objects[^1];
        Assert.Equal(0, summary.GetProperty("failures").GetInt32());
        Assert.True(summary.GetProperty("parity_checks").GetInt32() >= 30);
    }

    [Fact]
    public void Smoke_run_of_the_ternary_and_int8_products_checks_every_shape_exactly()
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "kernel", "--smoke", "--only", "ternary,int8");
        Assert.True(code == 0, stderr + stdout);
        var objects = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.DoesNotContain(objects, o => o.TryGetProperty("error", out _));
        var ternary = objects.Where(o => o.TryGetProperty("kernel", out var k) && k.GetString() == "ternary_matmul").ToList();
        var int8 = objects.Where(o => o.TryGetProperty("kernel", out var k) && k.GetString() == "int8_matmul").ToList();
        Assert.Equal(2, ternary.Count);
        Assert.Equal(2, int8.Count);
        Assert.All(ternary, o =>
        {
            Assert.Equal("cpu-simd", o.GetProperty("path").GetString());
            Assert.Equal("exact", o.GetProperty("sums_parity").GetString());
            Assert.Equal("exact", o.GetProperty("forward_parity").GetString());
            Assert.True(o.TryGetProperty("fwd_fused_us", out _));
            Assert.True(o.TryGetProperty("sums_fused_us", out _));
        });
        Assert.All(int8, o =>
        {
            Assert.Equal("int-mm", o.GetProperty("path").GetString());
            Assert.Equal("exact", o.GetProperty("parity").GetString());
        });
        var summary = objects[^1];
        Assert.Equal(0, summary.GetProperty("failures").GetInt32());
        Assert.Equal(6, summary.GetProperty("parity_checks").GetInt32());
    }

    [Fact]
    public void Unknown_section_is_an_error_naming_the_choices()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "kernel", "--smoke", "--only", "rmsnrm");
        Assert.NotEqual(0, code);
        Assert.Contains("rmsnrm", stderr);
        Assert.Contains("rmsnorm", stderr);
    }
}
