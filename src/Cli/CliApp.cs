using System.CommandLine;

namespace QLoraNet.Cli;

/// <summary>Builds the command tree and maps every failure to one line on stderr and a non-zero exit code.</summary>
public static class CliApp
{
    public const int ExitUserError = 1;
    public const int ExitInterrupted = 130;

    /// <summary>Stopped by SIGTERM (128 + 15, the shell convention), after saving a checkpoint.</summary>
    public const int ExitTerminated = 143;

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
            stderr.WriteLine($"error: {ErrorLine(inner)}");
            if (verbose) stderr.WriteLine(inner.ToString());
            return ExitUserError;
        }
    }

    /// <summary>The longest error line printed; a message longer than this is cut (the rest is in --verbose).</summary>
    public const int MaxErrorChars = 1000;

    /// <summary>
    /// One line for the terminal. Native libtorch errors (ExternalException) carry a C++ backtrace of thousands of
    /// characters after their first line ("... Exception raised from ... frame #0: ..."): only that first line is
    /// kept. Other messages are already one line by construction; any control character left in one (from a file
    /// a reader quoted) is escaped so the input never reaches the terminal raw, and the line is capped.
    /// </summary>
    public static string ErrorLine(Exception e)
    {
        string message = e.Message;
        if (e is System.Runtime.InteropServices.ExternalException)
        {
            message = message.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? e.GetType().Name;
            int raised = message.IndexOf("Exception raised from", StringComparison.Ordinal);
            if (raised > 0) message = message[..raised].TrimEnd();
            message = "libtorch: " + message;
        }
        else message = string.Join(" ", message.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
        return QLoraNet.Formats.SafeText.Line(message, MaxErrorChars);
    }
}
