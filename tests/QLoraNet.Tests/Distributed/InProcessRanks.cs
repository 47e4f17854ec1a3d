using System.Diagnostics;
using QLoraNet.Distributed;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Distributed;

/// <summary>
/// Ranks as threads of the test process, each with its own <see cref="LoopbackCollectives"/> over real TCP
/// connections (rank 0 bound to port 0, the others told the real port): the whole multi-rank protocol without
/// the cost of starting processes. The libraries keep no process-global state, so threads stand in for processes;
/// real processes are exercised in <see cref="LauncherTests"/>.
/// </summary>
public static class InProcessRanks
{
    public sealed record Outcome<T>(T? Result, Exception? Error, TimeSpan Elapsed);

    /// <summary>Far above any run's 1-6 s: a bound on a hang, not a timing.</summary>
    static readonly TimeSpan Bound = TimeSpan.FromSeconds(120);

    /// <summary>Runs <paramref name="body"/> on every rank; returns each rank's result or exception.</summary>
    public static Outcome<T>[] RunAll<T>(int world, Func<ICollectives, T> body, TimeSpan? timeout = null, long bucketBytes = 4096)
    {
        using var host = TcpRendezvous.Listen(0);
        var rdzv = TimeSpan.FromSeconds(30);
        var traces = Enumerable.Range(0, world).Select(rank => new RankTrace(rank)).ToArray();
        var tasks = Enumerable.Range(0, world).Select(rank => Task.Factory.StartNew(() =>
        {
            var clock = Stopwatch.StartNew();
            try
            {
                traces[rank].Enter("in the rendezvous");
                var links = rank == 0
                    ? host.Accept(world, "test", [], rdzv)
                    : TcpRendezvous.Join("127.0.0.1", host.Port, rank, world, "test", rdzv);
                using var c = new TracedCollectives(new LoopbackCollectives(links, timeout ?? TimeSpan.FromSeconds(30), bucketBytes), traces[rank]);
                clock.Restart();
                var result = body(c);
                traces[rank].Enter("done");
                return new Outcome<T>(result, null, clock.Elapsed);
            }
            catch (Exception e)
            {
                traces[rank].Enter($"failed ({e.GetType().Name})");
                return new Outcome<T>(default, e, clock.Elapsed);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        if (!Task.WaitAll(tasks, Bound))
        {
            // Say where each rank is before anything changes, then close the unfinished ranks' connections so that a
            // rank waiting in a collective fails now instead of running on beside the next test.
            string where = string.Join("; ", traces.Select(t => t.ToString()));
            ThreadPool.GetMinThreads(out int minWorkers, out _);
            string pool = $"thread pool: {ThreadPool.ThreadCount} threads (minimum {minWorkers}), {ThreadPool.PendingWorkItemCount} items queued";
            foreach (var t in traces) t.Abandon();
            Assert.Fail($"ranks did not finish within {Bound.TotalSeconds:0} s: {where}; {pool}");
        }
        return tasks.Select(t => t.Result).ToArray();
    }

    /// <summary>Like <see cref="RunAll{T}"/>, failing the test if any rank threw.</summary>
    public static T[] Run<T>(int world, Func<ICollectives, T> body, TimeSpan? timeout = null, long bucketBytes = 4096)
    {
        var outcomes = RunAll(world, body, timeout, bucketBytes);
        foreach (var o in outcomes) if (o.Error != null) throw new Xunit.Sdk.XunitException($"a rank failed: {o.Error}");
        return outcomes.Select(o => o.Result!).ToArray();
    }

    /// <summary>What one rank is doing and since when, for the message when ranks do not finish.</summary>
    sealed class RankTrace(int rank)
    {
        readonly Stopwatch _clock = Stopwatch.StartNew();
        readonly object _gate = new();
        string _what = "not started";
        TimeSpan _since;
        ICollectives? _open;

        public void Enter(string what)
        {
            lock (_gate) (_what, _since) = (what, _clock.Elapsed);
        }

        public void Opened(ICollectives c)
        {
            lock (_gate) _open = c;
        }

        /// <summary>Closes the rank's connections (its next wait on them fails; a finished rank's are closed already,
        /// and a second dispose does nothing).</summary>
        public void Abandon()
        {
            ICollectives? open;
            lock (_gate) (open, _open) = (_open, null);
            try { open?.Dispose(); } catch (Exception) { } // the rank's own dispose may race this one; either closes
        }

        public override string ToString()
        {
            lock (_gate) return $"rank {rank} {_what} for {(_clock.Elapsed - _since).TotalSeconds:0.0} s";
        }
    }

    /// <summary>The rank's collectives, each call marking the trace: inside an operation, or computing after one.</summary>
    sealed class TracedCollectives : ICollectives
    {
        readonly ICollectives _inner;
        readonly RankTrace _trace;
        int _calls;

        public TracedCollectives(ICollectives inner, RankTrace trace)
        {
            (_inner, _trace) = (inner, trace);
            trace.Opened(inner);
            trace.Enter("computing before its first collective");
        }

        public int Rank => _inner.Rank;
        public int WorldSize => _inner.WorldSize;
        public Device Device => _inner.Device;
        public TimeSpan Timeout => _inner.Timeout;

        public void AllReduceSum(IReadOnlyList<Tensor> tensors) => Traced("all_reduce", () => _inner.AllReduceSum(tensors));
        public void Broadcast(IReadOnlyList<Tensor> tensors) => Traced("broadcast", () => _inner.Broadcast(tensors));
        public void Barrier(TimeSpan? timeout = null) => Traced("barrier", () => _inner.Barrier(timeout));
        public void Dispose() => _inner.Dispose();

        void Traced(string op, Action call)
        {
            string name = $"{op} (collective {++_calls})";
            _trace.Enter($"waiting in {name}");
            call();
            _trace.Enter($"computing after {name}");
        }
    }
}
