using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

[Trait("tier", "unit")]
public class CoreBindingTests
{
    [Fact]
    public void Each_rank_gets_an_equal_contiguous_block_of_the_allowed_cpus()
    {
        var all = Enumerable.Range(0, 32).ToArray();
        Assert.Equal(Enumerable.Range(0, 16), CoreBinding.Share(all, 0, 2));
        Assert.Equal(Enumerable.Range(16, 16), CoreBinding.Share(all, 1, 2));
        // A mask that was already limited (taskset, Slurm) is split, never widened; order does not matter.
        int[] limited = [23, 22, 21, 20, 19, 18, 17, 16, 7, 6, 5, 4, 3, 2, 1, 0];
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], CoreBinding.Share(limited, 0, 2));
        Assert.Equal([16, 17, 18, 19, 20, 21, 22, 23], CoreBinding.Share(limited, 1, 2));
        // Leftover CPUs go to no rank: 10 CPUs for 3 ranks are 3 each.
        var ten = Enumerable.Range(0, 10).ToArray();
        Assert.Equal([[0, 1, 2], [3, 4, 5], [6, 7, 8]], Enumerable.Range(0, 3).Select(r => CoreBinding.Share(ten, r, 3).ToArray()));
    }

    [Fact]
    public void Too_few_cpus_for_a_share_of_two_bind_nothing()
    {
        Assert.Empty(CoreBinding.Share([0, 1], 0, 2));
        Assert.Empty(CoreBinding.Share([0, 1, 2, 3, 4], 2, 3));
        Assert.Equal([0, 1], CoreBinding.Share([0, 1, 2, 3], 0, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => CoreBinding.Share([0, 1, 2, 3], 2, 2));
    }

    [Fact]
    public void Ranges_are_written_as_taskset_reads_them()
    {
        Assert.Equal("0-15", CoreBinding.Ranges(Enumerable.Range(0, 16).ToArray()));
        Assert.Equal("0-3,8,10-11", CoreBinding.Ranges([11, 10, 8, 3, 2, 1, 0]));
        Assert.Equal("", CoreBinding.Ranges([]));
    }

    /// <summary>Binding changes the whole process's affinity, so here only the cases that must not bind are run.</summary>
    [Fact]
    public void A_single_process_an_unknown_host_size_or_the_switch_off_do_not_bind()
    {
        Assert.Null(CoreBinding.Apply(Env()));
        Assert.Null(CoreBinding.Apply(Env(("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "29500"))));
        var two = Env(("RANK", "1"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "29500"));
        Assert.Null(CoreBinding.Apply(two, v => v == CoreBinding.Variable ? "0" : null));

        static DistributedEnvironment Env(params (string Key, string Value)[] vars)
        {
            var d = vars.ToDictionary(v => v.Key, v => v.Value);
            return DistributedEnvironment.From(k => d.GetValueOrDefault(k));
        }
    }
}
