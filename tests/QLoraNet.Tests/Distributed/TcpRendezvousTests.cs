using System.Diagnostics;
using System.Net.Sockets;
using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

/// <summary>The rendezvous: mismatched ranks fail fast (well before the deadline, which is long here) on both sides,
/// with a message naming both; missing ranks and an absent rank 0 are named at the deadline.</summary>
// Never beside the multi-process launches: on a 2-core CI machine, up to four training processes starve these ranks'
// socket completions and deadline timers (the leaver test once saw its 20 s deadline fire ~10 s late and naming the
// wrong rank, and once no rank finished within 120 s, both in full-suite runs); the deadlines are what is tested.
[Collection("processes")]
[Trait("tier", "unit")]
public class TcpRendezvousTests
{
    static readonly TimeSpan Long = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Payload_reaches_every_rank()
    {
        using var host = TcpRendezvous.Listen(0);
        var payload = Enumerable.Range(0, 128).Select(i => (byte)i).ToArray();
        var joiners = Enumerable.Range(1, 2).Select(r => Task.Run(() => TcpRendezvous.Join("localhost", host.Port, r, 3, "cfg", Long))).ToList();
        using var root = host.Accept(3, "cfg", payload, Long);
        foreach (var j in joiners)
        {
            using var links = await j;
            Assert.Equal(payload, links.Payload.ToArray());
        }
        Assert.Equal(payload, root.Payload.ToArray());
    }

    /// <summary>Rank 0 cannot listen where something else already does (a previous job, another program): one line
    /// naming the port and the variable to change, not a socket stack trace.</summary>
    [Fact]
    public void Rank_zero_names_a_rendezvous_port_in_use_and_the_variable_to_change()
    {
        using var taken = TcpRendezvous.Listen(0);
        var vars = new Dictionary<string, string>
        {
            ["RANK"] = "0", ["LOCAL_RANK"] = "0", ["WORLD_SIZE"] = "2", ["MASTER_ADDR"] = "127.0.0.1", ["MASTER_PORT"] = taken.Port.ToString(),
        };
        var env = DistributedEnvironment.From(k => vars.GetValueOrDefault(k));

        var e = Assert.Throws<CollectiveException>(() => TcpRendezvous.Connect(env, "cfg", () => [], Long));

        Assert.Equal("rendezvous", e.Operation);
        Assert.Contains($"port {taken.Port} is in use on this host; set {DistributedEnvironment.RendezvousPortVar}", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_rank_with_another_world_size_stops_the_rendezvous_at_once_on_both_sides()
    {
        using var host = TcpRendezvous.Listen(0);
        var clock = Stopwatch.StartNew();
        var joiner = Task.Run(() => TcpRendezvous.Join("127.0.0.1", host.Port, 1, 3, "cfg", Long));
        var e0 = Assert.Throws<CollectiveException>(() => host.Accept(2, "cfg", [], Long));
        var e1 = Assert.Throws<CollectiveException>(() => joiner.GetAwaiter().GetResult());
        Assert.True(clock.Elapsed < Long / 2, $"took {clock.Elapsed}"); // did not wait for the deadline
        Assert.Equal("rendezvous", e0.Operation);
        Assert.Contains("says WORLD_SIZE=3, rank 0 says WORLD_SIZE=2", e0.Message);
        Assert.Equal(1, e0.FailedRank);
        Assert.True(e1.Message.StartsWith("rank 1: rendezvous: rank 0 stopped the rendezvous: rank 1 (host "), e1.Message);
        Assert.Contains("says WORLD_SIZE=3, rank 0 says WORLD_SIZE=2", e1.Message);
    }

    [Fact]
    public void A_rank_with_another_config_or_a_taken_rank_is_refused()
    {
        using (var host = TcpRendezvous.Listen(0))
        {
            var joiner = Task.Run(() => TcpRendezvous.Join("127.0.0.1", host.Port, 1, 2, "sha256:bbbb", Long));
            var e = Assert.Throws<CollectiveException>(() => host.Accept(2, "sha256:aaaa", [], Long));
            Assert.Contains("runs a different configuration: 'sha256:bbbb' vs rank 0's 'sha256:aaaa'", e.Message);
            Assert.Throws<CollectiveException>(() => joiner.GetAwaiter().GetResult());
        }
        using (var host = TcpRendezvous.Listen(0))
        {
            var joiners = new[] { Task.Run(() => TcpRendezvous.Join("127.0.0.1", host.Port, 1, 3, "c", Long)), Task.Run(() => TcpRendezvous.Join("127.0.0.1", host.Port, 1, 3, "c", Long)) };
            var e = Assert.Throws<CollectiveException>(() => host.Accept(3, "c", [], Long));
            Assert.Contains("two processes say RANK=1", e.Message);
            foreach (var j in joiners) Assert.Throws<CollectiveException>(() => j.GetAwaiter().GetResult());
        }
    }

    [Fact]
    public void Missing_ranks_are_named_at_the_deadline_and_a_stray_connection_is_ignored()
    {
        using var host = TcpRendezvous.Listen(0);
        using var stray = new TcpClient("127.0.0.1", host.Port); // connects, says nothing useful
        stray.GetStream().Write("GET / HTTP/1.0\r\n\r\n"u8);
        // Its own thread, not the pool's: rank 2 must have joined before the deadline even on a loaded machine.
        var joiner = Task.Factory.StartNew(() => TcpRendezvous.Join("127.0.0.1", host.Port, 2, 4, "c", Long), TaskCreationOptions.LongRunning);
        var e = Assert.Throws<CollectiveException>(() => host.Accept(4, "c", [], TimeSpan.FromSeconds(4)));
        Assert.Contains("ranks 1, 3 did not join within 4 s", e.Message);
        Assert.Contains("rank 0 stopped the rendezvous", Assert.Throws<CollectiveException>(() => joiner.GetAwaiter().GetResult()).Message);
    }

    [Fact]
    public async Task A_joiner_retries_until_rank_zero_listens_and_names_it_when_it_never_does()
    {
        int port;
        using (var probe = TcpRendezvous.Listen(0)) port = probe.Port; // free now, and nobody listens
        var e = Assert.Throws<CollectiveException>(() => TcpRendezvous.Join("127.0.0.1", port, 1, 2, "c", TimeSpan.FromSeconds(0.5)));
        Assert.StartsWith($"rank 1: rendezvous: could not reach rank 0 at 127.0.0.1:{port} within 0.5 s", e.Message);

        // Rank 0 starting later than a joiner is the normal case.
        var joiner = Task.Run(() => TcpRendezvous.Join("127.0.0.1", port, 1, 2, "c", Long));
        await Task.Delay(300);
        using var host = TcpRendezvous.Listen(port);
        using var root = host.Accept(2, "c", [7], Long);
        using var links = await joiner;
        Assert.Equal(new byte[] { 7 }, links.Payload.ToArray());
    }
}
