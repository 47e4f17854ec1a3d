using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using QLoraNet.Distributed;

namespace QLoraNet.Cli;

/// <summary>
/// `dist-selftest` (hidden; for tests and the GPU bench script): run under a launcher (torchrun, or
/// `dist-selftest --gpus N`), every rank connects the collectives and runs <see cref="DistributedSelfTest"/>; rank 0
/// prints one JSON line. Fault injection for tests: `--fail-rank R --at STAGE` makes rank R exit (code 3) at that
/// stage, `--hang-rank R --at STAGE` makes it hang; `--wait-interrupt` waits for Ctrl-C after the checks and exits 130.
/// </summary>
public static class DistSelfTestCommand
{
    public const int ExitInjected = 3;

    public static Command Create(TextWriter stdout)
    {
        var backend = new Option<string>("--backend") { Description = "auto (nccl when a GPU is visible) | nccl | loopback", DefaultValueFactory = _ => "auto" };
        var gpus = new Option<int>("--gpus") { Description = "launch N ranks of this command on this host", DefaultValueFactory = _ => 1 };
        var timeout = new Option<double>("--timeout") { Description = "seconds one collective may wait", DefaultValueFactory = _ => 60 };
        var rdzvTimeout = new Option<double>("--rdzv-timeout") { Description = "seconds to gather all ranks", DefaultValueFactory = _ => 60 };
        var bucketKb = new Option<int>("--bucket-kb") { Description = "bucket size in KiB (small: many buckets)", DefaultValueFactory = _ => 8 };
        var failRank = new Option<int?>("--fail-rank") { Description = "this rank exits with code 3 at --at" };
        var hangRank = new Option<int?>("--hang-rank") { Description = "this rank hangs at --at" };
        var at = new Option<string>("--at") { Description = "stage: connect | broadcast | all_reduce | barrier | bench", DefaultValueFactory = _ => "all_reduce" };
        var waitInterrupt = new Option<bool>("--wait-interrupt") { Description = "after the checks, wait for Ctrl-C and exit 130" };
        var benchMb = new Option<int>("--bench-mb") { Description = "time all-reduces of a float32 buffer this large", DefaultValueFactory = _ => 0 };
        var benchIters = new Option<int>("--bench-iters") { DefaultValueFactory = _ => 20 };
        var fingerprint = new Option<string>("--fingerprint") { Description = "what every rank must agree on", DefaultValueFactory = _ => "dist-selftest" };
        var cmd = new Command("dist-selftest", "collective checks across the ranks of a launch") { Hidden = true };
        foreach (var o in new Option[] { backend, gpus, timeout, rdzvTimeout, bucketKb, failRank, hangRank, at, waitInterrupt, benchMb, benchIters, fingerprint })
            cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            var stderr = pr.InvocationConfiguration.Error;
            int n = pr.GetValue(gpus);
            if (n < 1) throw new ArgumentException($"--gpus {n}: must be at least 1");
            if (n > 1)
            {
                var args = pr.Tokens.Select(t => t.Value).ToList();
                int i = args.IndexOf("--gpus");
                args.RemoveRange(i, 2);
                return DistributedLaunch.Launch(["dist-selftest", .. args.Where(a => a != "dist-selftest")], n, stdout, stderr);
            }
            var env = DistributedEnvironment.FromProcess();
            if (!env.IsDistributed) throw new InvalidOperationException("dist-selftest runs as a rank of a launch: use --gpus N, or torchrun");
            DistributedLaunch.AttachChild(env, stderr);
            bool interrupted = false;
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; interrupted = true; };
            void Stage(string stage)
            {
                if (stage != pr.GetValue(at)) return;
                if (pr.GetValue(failRank) == env.Rank)
                {
                    stderr.WriteLine($"rank {env.Rank}: exiting at {stage} (--fail-rank)");
                    stderr.Flush();
                    Environment.Exit(ExitInjected);
                }
                if (pr.GetValue(hangRank) == env.Rank) Thread.Sleep(Timeout.Infinite);
            }
            LibTorchProbe.EnsureLoaded();
            string b = pr.GetValue(backend)!;
            bool cuda = b switch
            {
                "nccl" => true,
                "loopback" => false,
                "auto" => CudaDevices.Count() > 0,
                _ => throw new ArgumentException($"--backend '{b}': use auto, nccl or loopback"),
            };
            var timeouts = new CollectiveTimeouts(TimeSpan.FromSeconds(pr.GetValue(rdzvTimeout)), TimeSpan.FromSeconds(pr.GetValue(timeout)));
            Stage("connect");
            using var c = Collectives.Connect(env, cuda, pr.GetValue(fingerprint)!, timeouts, (long)pr.GetValue(bucketKb) << 10);
            var report = DistributedSelfTest.Run(c, new SelfTestOptions(BenchMegabytes: pr.GetValue(benchMb), BenchIterations: pr.GetValue(benchIters)), Stage);
            foreach (var check in report.Checks.Where(ch => !ch.Ok))
                stderr.WriteLine($"error: rank {env.Rank}: {check.Name}: {check.Detail}");
            if (env.Rank == 0)
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    world_size = env.WorldSize,
                    backend = c is NcclCollectives nc ? nc.Library : "loopback",
                    ok = report.Ok,
                    checks = report.Checks.Select(ch => new { name = ch.Name, ok = ch.Ok, detail = ch.Detail }),
                    allreduce_mb = report.BenchBytes >> 20,
                    allreduce_ms = report.AllReduceMilliseconds,
                    busbw_gbps = report.BusGigabytesPerSecond,
                }));
            if (pr.GetValue(waitInterrupt))
            {
                if (env.Rank == 0) { stdout.WriteLine("waiting for Ctrl-C"); stdout.Flush(); }
                while (!interrupted) Thread.Sleep(20);
                return CliApp.ExitInterrupted;
            }
            return report.Ok ? 0 : 1;
        });
        return cmd;
    }
}
