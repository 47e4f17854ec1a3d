using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>What <see cref="DistributedSelfTest.Run"/> checks and measures.</summary>
/// <param name="Seed">seeds every rank's data; every rank can therefore compute every other rank's tensors and the expected results</param>
/// <param name="Tensors">tensors per dtype in the all-reduce (of assorted shapes, so buckets hold several and split)</param>
/// <param name="BenchMegabytes">size of a float32 buffer to time all-reduces of (0: no measurement)</param>
/// <param name="BenchIterations">timed all-reduces of that buffer, after two untimed ones</param>
public sealed record SelfTestOptions(int Seed = 1234, int Tensors = 24, int BenchMegabytes = 0, int BenchIterations = 10);

/// <summary>One check's outcome.</summary>
public sealed record SelfTestCheck(string Name, bool Ok, string Detail);

/// <summary>All checks, and the measured all-reduce time and bus bandwidth (NCCL's definition: algorithm bandwidth
/// x 2(W-1)/W) when a measurement was asked for.</summary>
public sealed record SelfTestReport(IReadOnlyList<SelfTestCheck> Checks, double? AllReduceMilliseconds, double? BusGigabytesPerSecond, long BenchBytes)
{
    public bool Ok => Checks.All(c => c.Ok);
}

/// <summary>
/// The collective checks behind the hidden <c>dist-selftest</c> verb, run by every rank of a real launch: broadcast
/// (rank 0's data reaches every rank bit for bit), all-reduce of many float32, bfloat16 and float64 tensors in
/// several buckets against the sum every rank computes locally (bit for bit with the loopback backend, whose
/// order is fixed, <see cref="ReductionOrder"/>; within the reordering error bound with NCCL: |error| &lt;= (W-1) u
/// sum_r |x_r| per element, u the dtype's unit roundoff), and a barrier. <paramref name="stage"/> is told each
/// stage's name first ("broadcast", "all_reduce", "barrier", "bench"), so a caller can inject a failure there.
/// </summary>
public static class DistributedSelfTest
{
    public static SelfTestReport Run(ICollectives c, SelfTestOptions o, Action<string>? stage = null)
    {
        var checks = new List<SelfTestCheck>();
        bool exact = c is LoopbackCollectives;
        using (var scope = NewDisposeScope())
        {
            stage?.Invoke("broadcast");
            var rankZero = Data(o, 0, c.Device);
            var mine = c.Rank == 0 ? Data(o, 0, c.Device) : rankZero.Select(t => zeros_like(t)).ToList();
            c.Broadcast(mine);
            int same = mine.Zip(rankZero).Count(p => SameBits(p.First, p.Second));
            checks.Add(new SelfTestCheck("broadcast", same == mine.Count, $"{same}/{mine.Count} tensors equal rank 0's bit for bit"));

            stage?.Invoke("all_reduce");
            var all = Enumerable.Range(0, c.WorldSize).Select(r => Data(o, r, c.Device)).ToList();
            var reduced = all[c.Rank].Select(t => t.clone()).ToList();
            c.AllReduceSum(reduced);
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float64 })
            {
                var idx = Enumerable.Range(0, reduced.Count).Where(i => reduced[i].dtype == dtype).ToList();
                checks.Add(Compare($"all_reduce {dtype}", idx.Select(i => reduced[i]).ToList(), idx.Select(i => all.Select(d => d[i]).ToList()).ToList(), exact));
            }

            stage?.Invoke("barrier");
            c.Barrier();
            checks.Add(new SelfTestCheck("barrier", true, $"{c.WorldSize} ranks"));
        }

        double? ms = null, bus = null;
        long bytes = (long)o.BenchMegabytes << 20;
        if (bytes > 0)
        {
            stage?.Invoke("bench");
            using var scope = NewDisposeScope();
            var buffer = ones(bytes / 4, ScalarType.Float32, c.Device);
            for (int i = 0; i < 2; i++) c.AllReduceSum([buffer]);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < o.BenchIterations; i++) c.AllReduceSum([buffer]);
            double seconds = clock.Elapsed.TotalSeconds / Math.Max(1, o.BenchIterations);
            ms = seconds * 1000;
            bus = bytes / seconds / 1e9 * 2 * (c.WorldSize - 1) / c.WorldSize;
        }
        return new SelfTestReport(checks, ms, bus, bytes);
    }

    static bool SameBits(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.cpu().contiguous().bytes.SequenceEqual(b.cpu().contiguous().bytes);

    /// <summary>Rank <paramref name="rank"/>'s tensors: the same shapes on every rank, values from its own seed.</summary>
    static List<Tensor> Data(SelfTestOptions o, int rank, Device device)
    {
        using var g = new Generator((ulong)(o.Seed * 1009L + rank));
        var list = new List<Tensor>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            for (int i = 0; i < o.Tensors; i++)
                list.Add(randn([1 + i * 37 % 50, 1 + i * 13 % 20], generator: g).to(dtype).to(device));
        list.Add(randn([3, 5], ScalarType.Float64, generator: g).to(device));
        return list;
    }

    /// <summary>Exact: the reference of <see cref="ReductionOrder"/> (the pairwise tree over the ranks). Else: within (W-1) u sum_r|x_r| of the exact sum.</summary>
    static SelfTestCheck Compare(string name, IReadOnlyList<Tensor> got, IReadOnlyList<IReadOnlyList<Tensor>> perTensorRanks, bool exact)
    {
        int bad = 0;
        double worst = 0;
        for (int i = 0; i < got.Count; i++)
        {
            var xs = perTensorRanks[i].Select(x => x.cpu()).ToList();
            var g = got[i].cpu();
            if (exact)
            {
                var wide = g.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
                var acc = PairwiseOrder.Sum(xs.Select(x => x.to(wide)).ToList(), (a, b) => a.add(b));
                if (!SameBits(g, acc.to(g.dtype))) bad++;
            }
            else
            {
                var sum = xs.Aggregate(zeros_like(xs[0], ScalarType.Float64), (a, x) => a.add(x.to(ScalarType.Float64)));
                var mag = xs.Aggregate(zeros_like(xs[0], ScalarType.Float64), (a, x) => a.add(x.to(ScalarType.Float64).abs()));
                double u = g.dtype switch { ScalarType.Float64 => Math.Pow(2, -53), ScalarType.Float32 => Math.Pow(2, -24), _ => Math.Pow(2, -8) };
                // (W-1) additions, each rounding by at most u of a partial sum, plus the final rounding of the result.
                var bound = mag.mul(u * xs.Count);
                var err = g.to(ScalarType.Float64).sub(sum).abs();
                worst = Math.Max(worst, err.div(bound.clamp_min(double.Epsilon)).max().item<double>());
                if (err.gt(bound).any().item<bool>()) bad++;
            }
        }
        string detail = exact
            ? $"{got.Count - bad}/{got.Count} tensors equal the pairwise rank sum bit for bit"
            : $"{got.Count - bad}/{got.Count} tensors within the reordering bound (worst at {worst:F3} of it)";
        return new SelfTestCheck(name, bad == 0, detail);
    }
}
