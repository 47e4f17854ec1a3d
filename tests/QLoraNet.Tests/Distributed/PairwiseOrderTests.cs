using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

/// <summary>The summation tree that makes W replicas add what one process adds.</summary>
[Trait("tier", "unit")]
public class PairwiseOrderTests
{
    static string Tree(int lo, int count) =>
        PairwiseOrder.Sum(Enumerable.Range(lo, count).Select(i => i.ToString()).ToList(), (a, b) => $"({a}+{b})");

    [Fact]
    public void The_left_part_takes_the_larger_half_so_up_to_three_terms_add_in_order()
    {
        Assert.Equal("0", Tree(0, 1));
        Assert.Equal("(0+1)", Tree(0, 2));
        Assert.Equal("((0+1)+2)", Tree(0, 3));
        Assert.Equal("((0+1)+(2+3))", Tree(0, 4));
        Assert.Equal("(((0+1)+2)+(3+4))", Tree(0, 5));
        Assert.Equal(0.0, PairwiseOrder.Sum(Array.Empty<double>()));
    }

    [Fact]
    public void Streaming_with_the_merge_counts_builds_the_same_tree()
    {
        for (int n = 1; n <= 40; n++)
        {
            var merges = PairwiseOrder.MergesAfter(n);
            var stack = new Stack<string>();
            int most = 0;
            for (int i = 0; i < n; i++)
            {
                stack.Push(i.ToString());
                most = Math.Max(most, stack.Count);
                for (int k = 0; k < merges[i]; k++)
                {
                    var right = stack.Pop();
                    stack.Push($"({stack.Pop()}+{right})");
                }
            }
            Assert.Equal(Tree(0, n), Assert.Single(stack));
            Assert.True(most <= Math.Ceiling(Math.Log2(n)) + 1, $"n={n}: {most} partial sums held");
        }
    }

    /// <summary>The property data parallelism relies on: W ranks' blocks of A terms, each summed alone and then
    /// summed over the ranks, give the tree of all W·A terms exactly when W is a power of two or A = 1.</summary>
    [Theory]
    [InlineData(2, 1, true)]
    [InlineData(2, 3, true)]
    [InlineData(2, 5, true)]
    [InlineData(4, 3, true)]
    [InlineData(8, 2, true)]
    [InlineData(3, 1, true)]
    [InlineData(5, 1, true)]
    [InlineData(3, 2, false)]
    [InlineData(6, 2, false)]
    public void Rank_blocks_are_subtrees_when_the_world_is_a_power_of_two_or_accumulation_is_one(int world, int accumulation, bool same)
    {
        var perRank = Enumerable.Range(0, world).Select(r => Tree(r * accumulation, accumulation)).ToList();
        string distributed = PairwiseOrder.Sum(perRank, (a, b) => $"({a}+{b})");
        Assert.Equal(same, distributed == Tree(0, world * accumulation));
    }
}
