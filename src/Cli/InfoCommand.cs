using System.CommandLine;
using TorchSharp;

namespace QLoraNet.Cli;

/// <summary>`info`: versions, whether libtorch loads (and CUDA is visible), and which kernels a run would use.</summary>
public static class InfoCommand
{
    public static Command Create(TextWriter stdout)
    {
        var cmd = new Command("info", "print versions and the libtorch backend in use");
        cmd.SetAction(_ =>
        {
            LibTorchProbe.EnsureLoaded();
            stdout.WriteLine($"QLoraNet {typeof(InfoCommand).Assembly.GetName().Version}");
            stdout.WriteLine($"TorchSharp {typeof(torch).Assembly.GetName().Version}, libtorch {torch.__version__}");
            stdout.WriteLine($"CUDA available: {torch.cuda.is_available()}" + (torch.cuda.is_available() ? $" ({torch.cuda.device_count()} devices)" : ""));
            var device = torch.cuda.is_available() ? torch.CUDA : torch.CPU;
            foreach (var line in KernelChoice.For(device).Report()) stdout.WriteLine($"kernel: {line}");
            return 0;
        });
        return cmd;
    }
}
