using System.CommandLine;
using TorchSharp;

namespace QLoraNet.Cli;

/// <summary>`info`: versions and whether libtorch loads (and CUDA is visible).</summary>
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
            stdout.WriteLine($"fused 4-bit dequantization kernel: {QLoraNet.Quant.Kernels.FourBitCudaKernel.Unavailable ?? "embedded (used on CUDA tensors)"}");
            return 0;
        });
        return cmd;
    }
}
