using QLoraNet.Distributed;

namespace QLoraNet.Tests.Distributed;

/// <summary>
/// Real processes: <see cref="ProcessLauncher"/> starting 2 and 3 ranks of this build's CLI running the hidden
/// `dist-selftest` verb over the loopback backend. A rank that exits mid-collective or hangs makes the others fail
/// naming it and the launcher stop everything and exit non-zero; Ctrl-C is passed on and the launch exits 130.
/// </summary>
[Collection("processes")] // one launch at a time: each starts up to three .NET processes
[Trait("tier", "e2e")]
public class LauncherTests
{
    static LaunchSpec SelfTest(int ranks, params string[] extra)
    {
        return new LaunchSpec(Cli.Dotnet, [Cli.Dll, "dist-selftest", "--backend", "loopback", .. extra], ranks) { StopTimeout = TimeSpan.FromSeconds(5) };
    }

    static (int Code, string Out, string Err, IReadOnlyList<int> Pids) Launch(LaunchSpec spec, Action<ProcessLauncher, Lines>? during = null,
        TimeSpan? timeout = null) =>
        Cli.Launch(spec, during, timeout);

    static void AssertAllExited(IEnumerable<int> pids) => Cli.AssertAllExited(pids);

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Ranks_pass_the_collective_checks_and_rank_zero_prints_unprefixed(int ranks)
    {
        var (code, stdout, stderr, pids) = Launch(SelfTest(ranks));
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        var json = stdout.Split('\n').Single(l => l.StartsWith('{'));
        Assert.Contains($"\"world_size\":{ranks}", json);
        Assert.Contains("\"ok\":true", json);
        Assert.Contains("equal the pairwise rank sum bit for bit", json);
        AssertAllExited(pids);
    }

    /// <summary>Ranks that have all exited before the launcher waits: Process.WaitForExitAsync then hands every one the
    /// same cached completed task, which a wait keyed by task once took for one rank and threw on.</summary>
    [Fact]
    public void Ranks_that_ended_before_the_wait_are_all_collected()
    {
        if (OperatingSystem.IsWindows()) return;
        using var launcher = new ProcessLauncher(new LaunchSpec("/bin/true", [], 3), TextWriter.Null, TextWriter.Null);
        launcher.Start();
        Thread.Sleep(1000);   // /bin/true is long gone by then
        Assert.Equal(0, launcher.Wait());
    }

    [Fact]
    public void A_rank_that_exits_mid_collective_stops_the_launch_naming_it()
    {
        var (code, stdout, stderr, pids) = Launch(SelfTest(3, "--fail-rank", "2", "--at", "all_reduce", "--timeout", "60"));
        Assert.Equal(3, code); // the failing rank's own exit code
        Assert.Contains("launcher: rank 2 exited with code 3", stderr);
        Assert.Matches(@"\[rank 0\] error: rank 0: all_reduce #2: rank 2( \([^)]*\))? closed its connection", stderr);
        Assert.Matches(@"\[rank 1\] error: rank 1: all_reduce #2: .*rank 2", stderr);
        AssertAllExited(pids);
    }

    [Fact]
    public void A_hung_rank_is_named_after_the_timeout_and_killed()
    {
        var (code, stdout, stderr, pids) = Launch(SelfTest(2, "--hang-rank", "1", "--at", "all_reduce", "--timeout", "1"));
        Assert.Equal(1, code);
        Assert.Matches(@"\[rank 0\] error: rank 0: all_reduce #2: rank 1( \([^)]*\))? sent nothing within 1 s", stderr);
        Assert.Contains("launcher: rank 0 exited with code 1; stopping rank 1", stderr); // the hung rank was stopped, not waited for
        AssertAllExited(pids);
    }

    /// <summary>
    /// The test host is the launcher here. A test host started from a script or in the background ignores SIGINT, and
    /// its ranks inherit that across exec; they must handle the forwarded SIGINT all the same
    /// (<see cref="LauncherChild.AcceptForwardedInterrupts"/>; before it .NET installed no handler in such a rank and
    /// the launch waited forever). <paramref name="inheritIgnored"/> makes the ranks inherit an ignored SIGINT
    /// whatever this host's own disposition is (`sh -c 'trap "" INT; exec dotnet ...'`: exec keeps an ignore).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ctrl_C_is_passed_on_and_the_launch_exits_130(bool inheritIgnored)
    {
        var spec = SelfTest(2, "--wait-interrupt");
        if (inheritIgnored)
            spec = spec with { FileName = "/bin/sh", Arguments = ["-c", "trap '' INT; exec \"$0\" \"$@\"", spec.FileName, .. spec.Arguments] };
        var (code, stdout, stderr, pids) = Launch(spec, (launcher, output) =>
        {
            Assert.True(output.WaitFor("waiting for Ctrl-C", TimeSpan.FromSeconds(60)), "rank 0 never got to wait");
            launcher.Forward(ForwardedSignal.Interrupt);
        }, timeout: TimeSpan.FromSeconds(60));
        Assert.True(code == ProcessLauncher.ExitInterrupted, $"exit {code}\n{stdout}\n{stderr}");
        AssertAllExited(pids);
    }
}
