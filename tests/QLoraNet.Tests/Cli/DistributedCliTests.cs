namespace QLoraNet.Tests.Cli;

[Trait("tier", "unit")]
public class DistributedCliTests
{
    static string Quickstart => Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml");

    [Fact]
    public void Dist_selftest_is_kept_out_of_help_and_train_lists_gpus()
    {
        var (code, stdout, _) = CliRunner.Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("train", stdout);
        Assert.DoesNotContain("dist-selftest", stdout);
        var train = CliRunner.Run("train", "--help");
        Assert.Contains("--gpus", train.Stdout);
        Assert.Contains("--gpus", CliRunner.Run("bench", "train", "--help").Stdout);
    }

    [Fact]
    public void Bench_train_refuses_a_split_across_ranks()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "train", "--model", Paths.TinyModel, "--split", "--gpus", "2");
        Assert.Equal(1, code);
        Assert.Equal("error: --split times one GPU's step: drop --gpus", stderr.Trim());
    }

    [Fact]
    public void Gpus_below_one_is_a_one_line_error()
    {
        var (code, _, stderr) = CliRunner.Run("train", Quickstart, "--gpus", "0");
        Assert.Equal(1, code);
        Assert.Equal("error: --gpus 0: must be at least 1", stderr.Trim());
    }

    [Fact]
    public void Dist_selftest_outside_a_launch_says_how_to_launch_it()
    {
        var (code, _, stderr) = CliRunner.Run("dist-selftest");
        Assert.Equal(1, code);
        Assert.Contains("dist-selftest runs as a rank of a launch: use --gpus N, or torchrun", stderr);
    }
}
