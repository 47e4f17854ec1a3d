using System.CommandLine;

namespace QLoraNet.Cli;

/// <summary>`bench`: performance measurements (GPU). Subcommands: kernel, train.</summary>
public static class BenchCommand
{
    public static Command Create(TextWriter stdout)
    {
        var cmd = new Command("bench", "benchmarks (run on a GPU machine; results go to docs/BENCHMARKS.md)");
        cmd.Subcommands.Add(BenchKernelCommand.Create(stdout));
        cmd.Subcommands.Add(BenchTrainCommand.Create(stdout));
        cmd.Subcommands.Add(BenchQuantizeCommand.Create(stdout));
        return cmd;
    }
}
