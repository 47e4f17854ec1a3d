using System.CommandLine;

namespace QLoraNet.Cli;

/// <summary>The verbs. Each verb lives in its own file as a static class with a Create() method.</summary>
public static partial class Commands
{
    public static IEnumerable<Command> All(TextWriter stdout)
    {
        yield return InfoCommand.Create(stdout);
        yield return TrainCommand.Create(stdout);
        yield return GenerateCommand.Create(stdout);
        yield return BenchCommand.Create(stdout);
        yield return ExportCommand.Create(stdout);
        yield return InspectCommand.Create(stdout);
        yield return EvalCommand.Create(stdout);
        yield return QuantizeCommand.Create(stdout);
        yield return MergeCommand.Create(stdout);
        yield return LogitsCommand.Create(stdout);
        yield return TokenizeCommand.Create(stdout);
        yield return ChatCommand.Create(stdout);
        yield return PlotCommand.Create(stdout);
        yield return DistSelfTestCommand.Create(stdout); // hidden: collective checks for tests and the GPU bench
    }
}
