using QLoraNet.Cli;

namespace QLoraNet.Tests;

/// <summary>Runs the CLI in-process with captured output (the same code path as `dotnet run -- ...`).</summary>
public static class CliRunner
{
    public static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = CliApp.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}
