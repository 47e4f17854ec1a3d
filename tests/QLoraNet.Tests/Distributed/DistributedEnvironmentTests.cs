using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

[Trait("tier", "unit")]
public class DistributedEnvironmentTests
{
    static DistributedEnvironment From(params (string Key, string Value)[] vars)
    {
        var d = vars.ToDictionary(v => v.Key, v => v.Value);
        return DistributedEnvironment.From(k => d.GetValueOrDefault(k));
    }

    static readonly (string, string)[] Torchrun =
        [("RANK", "3"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_WORLD_SIZE", "2"), ("MASTER_ADDR", "node-a"), ("MASTER_PORT", "29500")];

    [Fact]
    public void No_launcher_variables_mean_a_single_process()
    {
        var env = From();
        Assert.False(env.IsDistributed);
        Assert.Equal(1, env.WorldSize);
        Assert.Equal(0, env.Rank);
        Assert.False(From(("RANK", "0"), ("WORLD_SIZE", "1")).IsDistributed);
    }

    [Fact]
    public void Reads_what_torchrun_sets()
    {
        var env = From(Torchrun);
        Assert.True(env.IsDistributed);
        Assert.Equal((3, 1, 4, 2, "node-a", 29500, 29500), (env.Rank, env.LocalRank, env.WorldSize, env.LocalWorldSize!.Value, env.MasterAddr, env.MasterPort, env.RendezvousPort));
    }

    [Fact]
    public void Rendezvous_port_moves_off_torchruns_store_unless_set()
    {
        Assert.Equal(29501, From([.. Torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "True")]).RendezvousPort);
        Assert.Equal(40000, From([.. Torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "True"), ("QLORANET_RDZV_PORT", "40000")]).RendezvousPort);
        Assert.Equal(29500, From([.. Torchrun, ("TORCHELASTIC_USE_AGENT_STORE", "False")]).RendezvousPort);
    }

    [Theory]
    [InlineData("RANK", "x", "environment variable RANK=x is not an integer")]
    [InlineData("RANK", "4", "environment variable RANK=4 must be in 0..3 (WORLD_SIZE=4)")]
    [InlineData("WORLD_SIZE", "0", "environment variable WORLD_SIZE=0 must be in")]
    [InlineData("LOCAL_RANK", "2", "environment variable LOCAL_RANK=2 must be in 0..1 (LOCAL_WORLD_SIZE=2)")]
    [InlineData("MASTER_PORT", "70000", "environment variable MASTER_PORT=70000 must be in 1..65535")]
    [InlineData("QLORANET_RDZV_PORT", "-1", "environment variable QLORANET_RDZV_PORT=-1 must be in 1..65535")]
    public void Bad_values_are_one_line_errors_naming_the_variable(string key, string value, string message)
    {
        var vars = Torchrun.Where(v => v.Item1 != key).Append((key, value)).ToArray();
        var e = Assert.Throws<InvalidOperationException>(() => From(vars));
        Assert.StartsWith(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("WORLD_SIZE", "environment variable RANK=3 is set but WORLD_SIZE is not")]
    [InlineData("RANK", "environment variable WORLD_SIZE=4 is set but RANK is not")]
    [InlineData("LOCAL_RANK", "environment variable LOCAL_RANK is not set")]
    [InlineData("MASTER_ADDR", "environment variable MASTER_ADDR is not set")]
    [InlineData("MASTER_PORT", "environment variable MASTER_PORT is not set")]
    public void Missing_variables_are_named(string missing, string message)
    {
        var e = Assert.Throws<InvalidOperationException>(() => From(Torchrun.Where(v => v.Item1 != missing).ToArray()));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void The_launchers_child_variables_read_back()
    {
        var vars = DistributedEnvironment.ChildVariables(2, 2, 3, 3, "127.0.0.1", 12345);
        var env = DistributedEnvironment.From(k => vars.GetValueOrDefault(k));
        Assert.Equal(new DistributedEnvironment(2, 2, 3, 3, "127.0.0.1", 12345, 12345), env);
    }
}
