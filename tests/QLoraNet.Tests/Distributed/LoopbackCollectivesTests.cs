using System.Diagnostics;
using QLoraNet.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Distributed;

/// <summary>The CPU backend with 2 and 3 ranks (threads over real TCP): results against a single-process
/// computation along the same tree (PairwiseOrder), bit for bit; faults named within the timeout.</summary>
// Never beside the multi-process launches: the deadlines are what is tested, and on a 2-core CI machine up to four
// training processes beside them made the leaver test's 20 s deadline fire ~10 s late naming the wrong rank, and no
// rank finish within 120 s (the backend's I/O was async then, and waited for thread-pool threads; see
// Collectives_need_no_thread_pool_thread).
[Collection("processes")]
[Trait("tier", "unit")]
public class LoopbackCollectivesTests
{
    /// <summary>Rank r's tensors: many, of assorted shapes, so that 4 KiB buckets hold several and split between them.</summary>
    static List<Tensor> Data(int rank, ScalarType dtype, int count = 30)
    {
        using var g = new Generator((ulong)(77 + rank));
        return Enumerable.Range(0, count).Select(i => randn([1 + i * 7 % 23, 1 + i * 5 % 17], generator: g).to(dtype)).ToList();
    }

    static bool SameBits(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.contiguous().bytes.SequenceEqual(b.contiguous().bytes);

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Bucketed_all_reduce_of_many_fp32_tensors_equals_the_single_process_pairwise_sum_bit_for_bit(int world)
    {
        var results = InProcessRanks.Run(world, c =>
        {
            var mine = Data(c.Rank, ScalarType.Float32);
            c.AllReduceSum(mine);
            return mine;
        });
        // One process, the same tree: ((x0 + x1) + x2) for three ranks, (x0 + x1) + (x2 + x3) for four.
        var all = Enumerable.Range(0, world).Select(r => Data(r, ScalarType.Float32)).ToList();
        for (int i = 0; i < all[0].Count; i++)
        {
            var expected = PairwiseOrder.Sum(all.Select(d => d[i]).ToList(), (a, b) => a.add(b));
            for (int r = 0; r < world; r++) Assert.True(SameBits(expected, results[r][i]), $"rank {r}, tensor {i}");
        }
        // The order matters: another order differs somewhere, so the test can tell.
        if (world >= 3)
            Assert.Contains(Enumerable.Range(0, all[0].Count), i =>
                !SameBits(Enumerable.Range(1, world - 1).Aggregate(all[world - 1][i].clone(), (acc, k) => acc.add(all[world - 1 - k][i])), results[0][i]));
        if (world == 4)
            Assert.Contains(Enumerable.Range(0, all[0].Count), i => !SameBits(all[0][i].add(all[1][i]).add(all[2][i]).add(all[3][i]), results[0][i]));
    }

    [Fact]
    public void Bf16_sums_accumulate_in_fp32_along_the_tree_and_round_once()
    {
        var results = InProcessRanks.Run(3, c =>
        {
            var mine = Data(c.Rank, ScalarType.BFloat16, 10);
            c.AllReduceSum(mine);
            return mine;
        });
        var all = Enumerable.Range(0, 3).Select(r => Data(r, ScalarType.BFloat16, 10)).ToList();
        for (int i = 0; i < 10; i++)
        {
            var expected = all[0][i].to(ScalarType.Float32).add(all[1][i].to(ScalarType.Float32)).add(all[2][i].to(ScalarType.Float32)).to(ScalarType.BFloat16);
            Assert.True(SameBits(expected, results[1][i]), $"tensor {i}");
        }
    }

    [Fact]
    public void Broadcast_gives_every_rank_rank_zeros_tensors_of_any_dtype()
    {
        var results = InProcessRanks.Run(3, c =>
        {
            var t = new List<Tensor> { full(5, 10L + c.Rank), full(new long[] { 2, 3 }, 0.5f + c.Rank), full(4, c.Rank == 0, ScalarType.Bool) };
            c.Broadcast(t);
            return t;
        });
        foreach (var r in results)
        {
            Assert.Equal(10L, r[0][0].item<long>());
            Assert.Equal(0.5f, r[1][1, 2].item<float>());
            Assert.True(r[2].all().item<bool>());
        }
    }

    [Fact]
    public void Barrier_waits_for_the_slowest_rank()
    {
        using var started = new CountdownEvent(2);
        var results = InProcessRanks.Run(3, c =>
        {
            var clock = Stopwatch.StartNew();
            if (c.Rank == 2) { started.Wait(); Thread.Sleep(300); } // arrives 300 ms after the others started their clocks
            else started.Signal();
            c.Barrier();
            return (c.Rank, Waited: clock.Elapsed);
        });
        // A causal bound, not a timing measurement: ranks 0 and 1 cannot leave before rank 2 arrives.
        Assert.All(results.Where(r => r.Rank != 2), r => Assert.True(r.Waited >= TimeSpan.FromMilliseconds(290), $"rank {r.Rank} left after {r.Waited}"));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void A_rank_that_leaves_mid_collective_makes_the_others_fail_naming_it(int world)
    {
        int leaver = world - 1;
        var timeout = TimeSpan.FromSeconds(20);
        var outcomes = InProcessRanks.RunAll(world, c =>
        {
            c.Barrier();
            if (c.Rank == leaver) { c.Dispose(); return 0; } // its connections close, as when its process exits
            c.AllReduceSum(Data(c.Rank, ScalarType.Float32));
            return 1;
        }, timeout);
        for (int r = 0; r < world; r++)
        {
            if (r == leaver) continue;
            var e = Assert.IsType<CollectiveException>(outcomes[r].Error);
            Assert.Equal(r, e.Rank);
            Assert.Equal(leaver, e.FailedRank);
            Assert.StartsWith($"rank {r}: all_reduce #2: ", e.Message);
            Assert.Matches($@"rank {leaver}( \([^)]*\))? closed its connection \(its process exited", e.Message);
            Assert.True(outcomes[r].Elapsed < timeout, $"rank {r} took {outcomes[r].Elapsed}"); // noticed at once, not at the timeout
        }
    }

    [Fact]
    public void A_hung_rank_is_named_after_the_timeout()
    {
        var outcomes = InProcessRanks.RunAll(3, c =>
        {
            c.Barrier();
            if (c.Rank == 1) { Thread.Sleep(4000); return 0; } // alive but not calling
            c.AllReduceSum(Data(c.Rank, ScalarType.Float32, 3));
            return 1;
        }, TimeSpan.FromSeconds(1));
        var e0 = Assert.IsType<CollectiveException>(outcomes[0].Error);
        Assert.Matches(@"^rank 0: all_reduce #2: rank 1( \([^)]*\))? sent nothing within 1 s", e0.Message);
        Assert.Equal(1, e0.FailedRank);
        var e2 = Assert.IsType<CollectiveException>(outcomes[2].Error);
        Assert.StartsWith("rank 2: all_reduce #2: rank 0 reports: rank 0: all_reduce #2: rank 1", e2.Message);
        Assert.Equal(1, e2.FailedRank);
    }

    [Fact]
    public void Ranks_calling_different_collectives_or_sizes_fail_with_both_named()
    {
        var order = InProcessRanks.RunAll(2, c =>
        {
            var t = new List<Tensor> { ones(4) };
            if (c.Rank == 0) c.AllReduceSum(t); else c.Barrier();
            return 0;
        }, TimeSpan.FromSeconds(10));
        Assert.Matches(@"^rank 0: all_reduce #1: rank 1( \([^)]*\))? is at barrier #1: the ranks called different collectives", order[0].Error!.Message);

        var sizes = InProcessRanks.RunAll(2, c =>
        {
            c.AllReduceSum([ones(c.Rank == 0 ? 4 : 5)]);
            return 0;
        }, TimeSpan.FromSeconds(10));
        Assert.Matches(@"rank 1( \([^)]*\))? passed 20 bytes of Float32, this rank 16 bytes of Float32", sizes[0].Error!.Message);
        Assert.Contains("rank 0 reports:", sizes[1].Error!.Message);
    }

    [Fact]
    public void After_a_failure_every_call_fails_at_once()
    {
        var outcomes = InProcessRanks.RunAll(2, c =>
        {
            if (c.Rank == 1) { c.Dispose(); return "left"; }
            try { c.Barrier(); } catch (CollectiveException) { }
            var e = Assert.Throws<CollectiveException>(() => c.AllReduceSum([ones(3)]));
            return e.Message;
        }, TimeSpan.FromSeconds(10));
        Assert.Contains("rank 0: all_reduce #2: the communicator failed earlier", outcomes[0].Result);
    }

    [Fact]
    public void Integer_sums_are_refused_with_the_supported_dtypes()
    {
        var outcomes = InProcessRanks.RunAll(2, c => { c.AllReduceSum([ones(3, ScalarType.Int64)]); return 0; }, TimeSpan.FromSeconds(5));
        Assert.Contains("cannot sum Int64 tensors; use float32, float64, bfloat16 or float16", outcomes[0].Error!.Message);
    }

    /// <summary>Frames far larger than a socket's buffers (16 MiB in one bucket, three ranks): every send and receive
    /// is split over many polls, and the result is still the pairwise sum bit for bit, on every rank.</summary>
    [Fact]
    public void Frames_larger_than_the_socket_buffers_arrive_whole()
    {
        static Tensor Big(int rank) => randn(4L << 20, generator: new Generator((ulong)(900 + rank)));
        var results = InProcessRanks.Run(3, c =>
        {
            var mine = new List<Tensor> { Big(c.Rank) };
            c.AllReduceSum(mine);
            c.Broadcast(mine);
            return mine[0];
        }, bucketBytes: 32L << 20);
        var expected = PairwiseOrder.Sum(Enumerable.Range(0, 3).Select(Big).ToList(), (a, b) => a.add(b));
        for (int r = 0; r < 3; r++) Assert.True(SameBits(expected, results[r]), $"rank {r}");
    }

    /// <summary>
    /// The backend's I/O and deadlines run on the calling thread: with every thread-pool thread held (and 200 more
    /// items queued behind them), two ranks still do 20 all-reduces at once. Async socket I/O would wait for a pool
    /// thread for its completions and its deadline timers alike, and stall until the pool is released.
    /// </summary>
    [Fact]
    public void Collectives_need_no_thread_pool_thread()
    {
        // Not disposed: the items queued behind the held threads start after the test, and must find it set.
        var release = new ManualResetEventSlim();
        bool released = false;
        var safety = new Thread(() => { if (!release.Wait(TimeSpan.FromSeconds(30))) { released = true; release.Set(); } }) { IsBackground = true };
        safety.Start();
        var outcomes = InProcessRanks.RunAll(2, c =>
        {
            c.Barrier();                  // the rendezvous (async) is over
            if (c.Rank == 0) HoldEveryPoolThread(release);
            var sums = new List<float>();
            try
            {
                for (int i = 0; i < 20; i++)
                {
                    var t = new List<Tensor> { full(1000, (float)(c.Rank + i)) };
                    c.AllReduceSum(t);
                    sums.Add(t[0][999].item<float>());
                }
            }
            finally { if (c.Rank == 0) release.Set(); }
            return sums;
        }, TimeSpan.FromSeconds(10));
        safety.Join();
        Assert.False(released, "the ranks waited for the held pool (released by the 30 s safety)");
        foreach (var o in outcomes)
        {
            Assert.Null(o.Error);
            Assert.Equal(Enumerable.Range(0, 20).Select(i => (float)(2 * i + 1)), o.Result);
        }
    }

    /// <summary>Queues blocking items until one waits for a thread: every pool thread is then held until release.
    /// An item that runs once the event is set returns at once.</summary>
    static void HoldEveryPoolThread(ManualResetEventSlim release)
    {
        int items = ThreadPool.ThreadCount + 200;
        for (int i = 0; i < items; i++) ThreadPool.UnsafeQueueUserWorkItem(_ => release.Wait(), null);
        var clock = Stopwatch.StartNew();
        while (ThreadPool.PendingWorkItemCount == 0)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), "the pool took every item: cannot hold it");
            Thread.Sleep(1);
        }
    }
}
