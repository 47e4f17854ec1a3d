using System.CommandLine;
using TorchSharp;

namespace QLoraNet.Cli;

/// <summary>`info`: versions, whether libtorch loads (and CUDA is visible), and which kernels a run would use;
/// `info --allocator` checks the CUDA allocator counters instead (<see cref="AllocatorCheck"/>).</summary>
public static class InfoCommand
{
    public static Command Create(TextWriter stdout)
    {
        var cmd = new Command("info", "print versions and the libtorch backend in use");
        var allocator = new Option<bool>("--allocator")
        {
            Description = "check the CUDA caching allocator's allocated/reserved counters instead (JSON: layout, self-check, a 1 GiB allocate/free/peak-reset; exit 1 when unavailable)",
        };
        cmd.Options.Add(allocator);
        cmd.SetAction(pr =>
        {
            if (pr.GetValue(allocator)) return AllocatorCheck.Run(stdout);
            var libtorch = LibTorchProbe.EnsureLoaded();
            stdout.WriteLine($"QLoraNet {typeof(InfoCommand).Assembly.GetName().Version}");
            stdout.WriteLine($"libtorch loaded: {libtorch.Summary}");
            stdout.WriteLine($"TorchSharp {typeof(torch).Assembly.GetName().Version}, libtorch {torch.__version__}");
            stdout.WriteLine($"CUDA available: {torch.cuda.is_available()}" + (torch.cuda.is_available() ? $" ({torch.cuda.device_count()} devices)" : ""));
            stdout.WriteLine($"CUDA allocator: {QLoraNet.Native.CudaAllocatorDefaults.Describe()}");
            var device = torch.cuda.is_available() ? torch.CUDA : torch.CPU;
            foreach (var line in KernelChoice.For(device).Report()) stdout.WriteLine($"kernel: {line}");
            // Where the process maps libtorch from: one copy of each library, from the directory named above.
            var names = QLoraNet.Native.LibTorchBuild.CpuLibraries.Concat(QLoraNet.Native.LibTorchBuild.CudaLibraries).ToHashSet();
            stdout.WriteLine("libtorch files: " + string.Join(", ", QLoraNet.Native.ProcessMaps.Libraries().Where(p => names.Contains(Path.GetFileName(p))).Order()));
            return 0;
        });
        return cmd;
    }
}
