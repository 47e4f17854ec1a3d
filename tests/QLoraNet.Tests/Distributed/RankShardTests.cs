using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

public class RankShardTests
{
    [Fact]
    public void Ranks_take_interleaved_positions_that_cover_each_step_exactly_once()
    {
        var step = Enumerable.Range(100, 6).ToList(); // one step's global micro-batches, accumulation 2 x world 3
        var parts = Enumerable.Range(0, 3).Select(r => new RankShard(r, 3, 2).Take(step)).ToList();
        Assert.Equal(new[] { 100, 103 }, parts[0]);
        Assert.Equal(new[] { 101, 104 }, parts[1]);
        Assert.Equal(new[] { 102, 105 }, parts[2]);
        Assert.Equal(step, parts.SelectMany(p => p).Order());
    }

    [Fact]
    public void Two_ranks_with_accumulation_A_see_the_data_of_one_rank_with_2A()
    {
        // The global micro-batch sequence is the same for every world size; steps consume A x W of it.
        var sequence = Enumerable.Range(0, 40).ToList();
        var one = new RankShard(0, 1, 4);
        var two = new[] { new RankShard(0, 2, 2), new RankShard(1, 2, 2) };
        Assert.Equal(one.MicroBatchesPerStep, two[0].MicroBatchesPerStep);
        for (int s = 0; s < 40 / one.MicroBatchesPerStep; s++)
        {
            var stepData = sequence.Skip(s * 4).Take(4).ToList();
            Assert.Equal(one.Take(stepData).Order(), two.SelectMany(r => r.Take(stepData)).Order());
        }
        Assert.Equal(16, two[1].GlobalBatchSize(microBatchSize: 4));
        Assert.Equal(3, one.Steps(9));
    }

    [Fact]
    public void Resume_on_another_world_size_needs_the_same_global_batch()
    {
        Assert.Null(new RankShard(0, 2, 2).ResumeProblem(savedMicroBatchSize: 4, savedAccumulation: 4, savedWorldSize: 1, microBatchSize: 4));
        Assert.Null(new RankShard(0, 4, 1).ResumeProblem(4, 2, 2, 4));
        Assert.Contains("set training.gradient_accumulation_steps=2 to keep the global batch on 2 ranks",
            new RankShard(0, 2, 4).ResumeProblem(4, 4, 1, 4));
        Assert.Contains("cannot be split over 3 ranks", new RankShard(0, 3, 1).ResumeProblem(4, 4, 1, 4));
        Assert.Contains("set training.micro_batch_size=4", new RankShard(0, 2, 2).ResumeProblem(4, 4, 1, 2));
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
