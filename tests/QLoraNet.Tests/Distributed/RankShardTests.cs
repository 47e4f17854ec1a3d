using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

[Trait("tier", "unit")]
public class RankShardTests
{
    [Fact]
    public void Ranks_take_contiguous_blocks_that_cover_each_step_exactly_once()
    {
        var step = Enumerable.Range(100, 6).ToList(); // one step's global micro-batches, accumulation 2 x world 3
        var parts = Enumerable.Range(0, 3).Select(r => new RankShard(r, 3, 2).Take(step)).ToList();
        Assert.Equal(new[] { 100, 101 }, parts[0]);
        Assert.Equal(new[] { 102, 103 }, parts[1]);
        Assert.Equal(new[] { 104, 105 }, parts[2]);
        Assert.Equal(step, parts.SelectMany(p => p));
        Assert.Equal(new[] { false, false, true, true, false, false }, Enumerable.Range(0, 6).Select(new RankShard(1, 3, 2).Owns));
    }

    [Fact]
    public void Two_ranks_with_accumulation_A_see_the_data_of_one_rank_with_2A_in_order()
    {
        // The global micro-batch sequence is the same for every world size; steps consume A x W of it.
        var sequence = Enumerable.Range(0, 40).ToList();
        var one = new RankShard(0, 1, 4);
        var two = new[] { new RankShard(0, 2, 2), new RankShard(1, 2, 2) };
        Assert.Equal(one.MicroBatchesPerStep, two[0].MicroBatchesPerStep);
        for (int s = 0; s < 40 / one.MicroBatchesPerStep; s++)
        {
            var stepData = sequence.Skip(s * 4).Take(4).ToList();
            Assert.Equal(one.Take(stepData), two.SelectMany(r => r.Take(stepData)));
        }
        Assert.Equal(16, two[1].GlobalBatchSize(microBatchSize: 4));
    }

    [Fact]
    public void Resume_on_another_world_size_keeps_the_global_batch_or_says_why_it_cannot()
    {
        Assert.Equal(3, new RankShard(0, 2, 3).AccumulationToResume(savedMicroBatchSize: 4, savedAccumulation: 1, savedWorldSize: 2, microBatchSize: 4)); // same world: the config's
        Assert.Equal(2, new RankShard(0, 2, 7).AccumulationToResume(4, 4, 1, 4));
        Assert.Equal(4, new RankShard(0, 1, 1).AccumulationToResume(4, 2, 2, 4));
        Assert.Equal(1, new RankShard(3, 4, 1).AccumulationToResume(4, 2, 2, 4));
        var split = Assert.Throws<InvalidOperationException>(() => new RankShard(0, 3, 1).AccumulationToResume(4, 4, 1, 4));
        Assert.Equal("the checkpoint's global batch is 4 x 4 x 1 (micro-batch x accumulation x world) = 16 sequences per step: its 4 micro-batches per step cannot be split over 3 ranks; resume on a world size that divides 4", split.Message);
        Assert.Contains("set training.micro_batch_size=4 to resume on 2 ranks", Assert.Throws<InvalidOperationException>(() => new RankShard(0, 2, 2).AccumulationToResume(4, 4, 1, 2)).Message);
    }

    [Fact]
    public void Invalid_shards_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new RankShard(2, 2, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RankShard(0, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RankShard(0, 1, 0));
        Assert.Throws<ArgumentException>(() => new RankShard(0, 2, 2).Take(new[] { 1, 2, 3 }));
    }
}
