using System.CommandLine;

namespace QLoraNet.Cli;

/// <summary>Builds the command tree and maps every failure to one line on stderr and a non-zero exit code.</summary>
public static class CliApp
{
    public const int ExitUserError = 1;
    public const int ExitInterrupted = 130;

    public static readonly Option<bool> Verbose = new("--verbose") { Description = "print stack traces on errors", Recursive = true };

    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        stdout ??= Console.Out;
        stderr ??= Console.Error;
        bool verbose = args.Contains("--verbose");
        var root = new RootCommand("QLoraNet: QLoRA fine-tuning for .NET on TorchSharp");
        root.Options.Add(Verbose);
        foreach (var cmd in Commands.All(stdout)) root.Subcommands.Add(cmd);
        try
        {
            var parsed = root.Parse(args);
            if (parsed.Errors.Count > 0)
            {
                foreach (var e in parsed.Errors) stderr.WriteLine($"error: {e.Message}");
                stderr.WriteLine("run with --help for usage");
                return ExitUserError;
            }
            var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
            return parsed.Invoke(config);
        }
        catch (Exception e)
        {
            var inner = e is System.Reflection.TargetInvocationException { InnerException: { } ie } ? ie : e;
            stderr.WriteLine($"error: {OneLine(inner.Message)}");
            if (verbose) stderr.WriteLine(inner.ToString());
            return ExitUserError;
        }
    }

    static string OneLine(string s) => string.Join(" ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
}
