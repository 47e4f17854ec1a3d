using System.Reflection;
using System.Runtime.InteropServices;
using QLoraNet.Distributed;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// The CLI's side of multi-process runs. <see cref="Launch"/>: `train CONFIG --gpus N` starts N ranks of this same
/// app (<see cref="ProcessLauncher"/>) and passes Ctrl-C and SIGTERM on to them. <see cref="AttachChild"/>: a rank
/// started that way (or by torchrun) ties its lifetime to the launcher's and binds itself to its share of the CPUs
/// (<see cref="CoreBinding"/>).
/// </summary>
static class DistributedLaunch
{
    /// <summary>Runs <paramref name="arguments"/> (a verb and its arguments, without --gpus) as <paramref name="ranks"/>
    /// processes; returns the launcher's exit code.</summary>
    public static int Launch(IReadOnlyList<string> arguments, int ranks, TextWriter stdout, TextWriter stderr)
    {
        var current = DistributedEnvironment.FromProcess();
        if (current.IsDistributed)
            throw new InvalidOperationException($"--gpus {ranks}: this process is already {current} of a distributed launch; drop --gpus under torchrun");
        var (file, prefix) = SelfCommand();
        var spec = new LaunchSpec(file, [.. prefix, .. arguments], ranks);
        using var launcher = new ProcessLauncher(spec, stdout, stderr);
        int interrupts = 0;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            // Ctrl-C reaches only this process (the ranks left the terminal's group): pass each one on, so the
            // first lets the ranks finish the step and checkpoint, the second aborts them; a third kills us.
            if (++interrupts > 2) return;
            e.Cancel = true;
            launcher.Forward(ForwardedSignal.Interrupt);
        };
        Console.CancelKeyPress += onCancel;
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx =>
        {
            ctx.Cancel = true;
            launcher.Forward(ForwardedSignal.Terminate);
        });
        try
        {
            launcher.Start();
            stderr.WriteLine($"launcher: started {ranks} ranks of {Path.GetFileName(file)} (MASTER_ADDR={spec.MasterAddr}, MASTER_PORT={launcher.MasterPort}; pids {string.Join(", ", launcher.ProcessIds)})");
            return launcher.Wait();
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>
    /// In a rank of a launch (torchrun or --gpus): joins the job's collectives (NCCL when the run is on CUDA, on GPU
    /// LOCAL_RANK; the loopback TCP backend on CPU) and returns this rank's replica group; null for a single process.
    /// The rendezvous refuses ranks whose <paramref name="agreed"/> strings (the resolved config, the resume choice)
    /// or build differ. Timeouts: QLORANET_RDZV_TIMEOUT, QLORANET_COLLECTIVE_TIMEOUT.
    /// </summary>
    public static ReplicaMembership? JoinAsReplica(DistributedEnvironment env, Device device, params string[] agreed)
    {
        if (!env.IsDistributed) return null;
        string build = typeof(DistributedLaunch).Assembly.ManifestModule.ModuleVersionId.ToString();
        var collectives = Collectives.Connect(env, device.type == DeviceType.CUDA, Collectives.Fingerprint([build, .. agreed]),
            CollectiveTimeouts.FromEnvironment());
        return new ReplicaMembership(collectives);
    }

    /// <summary>In a rank: when our launcher started it, leave the terminal's process group and stop if the launcher dies.</summary>
    public static void AttachChild(DistributedEnvironment env, TextWriter stderr)
    {
        LauncherChild.Attach(() =>
        {
            stderr.WriteLine($"error: rank {env.Rank}: the launcher is gone; stopping");
            Environment.Exit(1);
        });
        // Each rank on its own CPUs: ranks left to the scheduler slow each other's host-bound steps (CoreBinding).
        if (CoreBinding.Apply(env) is { } binding) stderr.WriteLine(binding);
    }

    /// <summary>How to start this app again: its own executable, or `dotnet app.dll` when run through the dotnet host.</summary>
    static (string File, string[] Prefix) SelfCommand()
    {
        string exe = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell this process's executable path");
        if (!Path.GetFileNameWithoutExtension(exe).Equals("dotnet", StringComparison.OrdinalIgnoreCase)) return (exe, []);
        string entry = Assembly.GetEntryAssembly()?.Location is { Length: > 0 } l ? l : throw new InvalidOperationException("cannot tell this app's entry assembly");
        return (exe, [entry]);
    }
}

/// <summary>This process's place in a data-parallel job: the collectives it joined and the replica group over them.
/// Disposing leaves the job (NCCL: destroys the communicator).</summary>
sealed class ReplicaMembership(ICollectives collectives) : IDisposable
{
    public ICollectives Collectives { get; } = collectives;
    public CollectiveReplicaGroup Group { get; } = new(collectives);
    public void Dispose() => Collectives.Dispose();
}
