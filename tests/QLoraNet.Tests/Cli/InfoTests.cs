using QLoraNet.Cli;

namespace QLoraNet.Tests.Cli;

[Trait("tier", "e2e")]
public class InfoTests
{
    [Fact]
    public void Info_loads_libtorch_and_prints_versions()
    {
        var (code, stdout, stderr) = CliRunner.Run("info");
        Assert.True(code == 0, stderr);
        Assert.Contains("libtorch 2.10", stdout);
        // The kernel choice is reported with its reason (this CPU machine: the SIMD loop).
        Assert.Contains(TorchSharp.torch.cuda.is_available() ? "kernel: nf4/fp4 dequant on cuda: " : "kernel: nf4/fp4 dequant on cpu: cpu-simd (", stdout);
    }

    [Fact]
    public void Unknown_verb_is_a_one_line_error_with_nonzero_exit()
    {
        var (code, _, stderr) = CliRunner.Run("frobnicate");
        Assert.NotEqual(0, code);
        Assert.Contains("frobnicate", stderr);
        Assert.DoesNotContain("   at ", stderr);
    }
}
