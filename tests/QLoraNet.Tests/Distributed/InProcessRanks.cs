using QLoraNet.Distributed;

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

    /// <summary>Runs <paramref name="body"/> on every rank; returns each rank's result or exception.</summary>
    public static Outcome<T>[] RunAll<T>(int world, Func<ICollectives, T> body, TimeSpan? timeout = null, long bucketBytes = 4096)
    {
        using var host = TcpRendezvous.Listen(0);
        var rdzv = TimeSpan.FromSeconds(30);
        var tasks = Enumerable.Range(0, world).Select(rank => Task.Factory.StartNew(() =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                var links = rank == 0
                    ? host.Accept(world, "test", [], rdzv)
                    : TcpRendezvous.Join("127.0.0.1", host.Port, rank, world, "test", rdzv);
                using var c = new LoopbackCollectives(links, timeout ?? TimeSpan.FromSeconds(30), bucketBytes);
                clock.Restart();
                return new Outcome<T>(body(c), null, clock.Elapsed);
            }
            catch (Exception e)
            {
                return new Outcome<T>(default, e, clock.Elapsed);
            }
        }, TaskCreationOptions.LongRunning)).ToArray();
        Assert.True(Task.WaitAll(tasks, TimeSpan.FromSeconds(120)), "ranks did not finish within 120 s");
        return tasks.Select(t => t.Result).ToArray();
    }

    /// <summary>Like <see cref="RunAll{T}"/>, failing the test if any rank threw.</summary>
    public static T[] Run<T>(int world, Func<ICollectives, T> body, TimeSpan? timeout = null, long bucketBytes = 4096)
    {
        var outcomes = RunAll(world, body, timeout, bucketBytes);
        foreach (var o in outcomes) if (o.Error != null) throw new Xunit.Sdk.XunitException($"a rank failed: {o.Error}");
        return outcomes.Select(o => o.Result!).ToArray();
    }
}
