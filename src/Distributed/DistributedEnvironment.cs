using System.Globalization;

namespace QLoraNet.Distributed;

/// <summary>
/// Where this process sits in a data-parallel job, as the launcher said it in environment variables: torchrun's
/// names, which Slurm-style wrappers and our own <c>train --gpus N</c> set too: <c>RANK</c> (0..WORLD_SIZE-1, global),
/// <c>LOCAL_RANK</c> (index on this host; picks the GPU), <c>WORLD_SIZE</c>, <c>LOCAL_WORLD_SIZE</c> (optional),
/// <c>MASTER_ADDR</c>, <c>MASTER_PORT</c>. None of RANK/WORLD_SIZE set means a single process.
/// <para>
/// The rendezvous port (<see cref="TcpRendezvous"/>): <c>QLORANET_RDZV_PORT</c> when set; else MASTER_PORT + 1 when
/// torchrun's agent already holds MASTER_PORT with its own store (it sets <c>TORCHELASTIC_USE_AGENT_STORE=True</c>
/// for its workers); else MASTER_PORT.
/// </para>
/// </summary>
/// <param name="Rank">global rank, 0..WorldSize-1</param>
/// <param name="LocalRank">rank on this host; the CUDA device index among the visible ones</param>
/// <param name="WorldSize">number of processes in the job</param>
/// <param name="LocalWorldSize">processes on this host, or null when the launcher did not say</param>
/// <param name="MasterAddr">host name or address of rank 0's host, as the other hosts reach it</param>
/// <param name="MasterPort">the launcher's master port</param>
/// <param name="RendezvousPort">the port rank 0 listens on for <see cref="TcpRendezvous"/></param>
public sealed record DistributedEnvironment(
    int Rank, int LocalRank, int WorldSize, int? LocalWorldSize, string MasterAddr, int MasterPort, int RendezvousPort)
{
    public const string RankVar = "RANK", LocalRankVar = "LOCAL_RANK", WorldSizeVar = "WORLD_SIZE",
        LocalWorldSizeVar = "LOCAL_WORLD_SIZE", MasterAddrVar = "MASTER_ADDR", MasterPortVar = "MASTER_PORT",
        RendezvousPortVar = "QLORANET_RDZV_PORT", TorchElasticAgentStoreVar = "TORCHELASTIC_USE_AGENT_STORE";

    /// <summary>One process: rank 0 of 1.</summary>
    public static DistributedEnvironment Single { get; } = new(0, 0, 1, 1, "127.0.0.1", 0, 0);

    /// <summary>More than one process: collectives are needed.</summary>
    public bool IsDistributed => WorldSize > 1;

    public bool IsRankZero => Rank == 0;

    /// <summary>From this process's environment.</summary>
    public static DistributedEnvironment FromProcess() => From(Environment.GetEnvironmentVariable);

    /// <summary>From any variable lookup (tests pass a dictionary). Errors are one line naming the variable.</summary>
    public static DistributedEnvironment From(Func<string, string?> get)
    {
        string? rankText = Get(get, RankVar), worldText = Get(get, WorldSizeVar);
        if (rankText is null && worldText is null)
        {
            foreach (var v in new[] { LocalRankVar, LocalWorldSizeVar })
                if (Get(get, v) is { } x && x != "0" && x != "1")
                    throw Error(v, x, $"is set but {RankVar} and {WorldSizeVar} are not; a launcher sets them together (torchrun, or train --gpus N)");
            return Single;
        }
        if (worldText is null) throw Error(RankVar, rankText!, $"is set but {WorldSizeVar} is not; set both (and {LocalRankVar}, {MasterAddrVar}, {MasterPortVar})");
        if (rankText is null) throw Error(WorldSizeVar, worldText, $"is set but {RankVar} is not; set both (and {LocalRankVar}, {MasterAddrVar}, {MasterPortVar})");

        int world = Int(WorldSizeVar, worldText, 1, 1 << 20);
        int rank = Int(RankVar, rankText, 0, world - 1, $"must be in 0..{world - 1} ({WorldSizeVar}={world})");
        if (world == 1) return Single;

        int? localWorld = Get(get, LocalWorldSizeVar) is { } lw ? Int(LocalWorldSizeVar, lw, 1, world, $"must be in 1..{world} ({WorldSizeVar}={world})") : null;
        string localText = Get(get, LocalRankVar) ?? throw Error(LocalRankVar, null, $"is not set; with {WorldSizeVar}={world} every process needs its rank on its host (it picks the GPU)");
        int localRank = localWorld is { } n
            ? Int(LocalRankVar, localText, 0, n - 1, $"must be in 0..{n - 1} ({LocalWorldSizeVar}={n})")
            : Int(LocalRankVar, localText, 0, world - 1, $"must be in 0..{world - 1} ({WorldSizeVar}={world})");
        string addr = Get(get, MasterAddrVar) ?? throw Error(MasterAddrVar, null, $"is not set; it names rank 0's host (e.g. 127.0.0.1 on one host)");
        int port = Int(MasterPortVar, Get(get, MasterPortVar) ?? throw Error(MasterPortVar, null, "is not set; rank 0 listens there for the rendezvous"), 1, 65535);

        int rdzvPort;
        if (Get(get, RendezvousPortVar) is { } rp) rdzvPort = Int(RendezvousPortVar, rp, 1, 65535);
        else if (Get(get, TorchElasticAgentStoreVar) == "True")
        {
            if (port == 65535) throw Error(MasterPortVar, "65535", $"leaves no port above it for the rendezvous under torchrun; set {RendezvousPortVar}");
            rdzvPort = port + 1;
        }
        else rdzvPort = port;
        return new DistributedEnvironment(rank, localRank, world, localWorld, addr, port, rdzvPort);
    }

    /// <summary>The variables a launcher sets for one child (<see cref="ProcessLauncher"/>).</summary>
    public static IReadOnlyDictionary<string, string> ChildVariables(int rank, int localRank, int worldSize, int localWorldSize, string masterAddr, int masterPort) =>
        new Dictionary<string, string>
        {
            [RankVar] = rank.ToString(CultureInfo.InvariantCulture),
            [LocalRankVar] = localRank.ToString(CultureInfo.InvariantCulture),
            [WorldSizeVar] = worldSize.ToString(CultureInfo.InvariantCulture),
            [LocalWorldSizeVar] = localWorldSize.ToString(CultureInfo.InvariantCulture),
            [MasterAddrVar] = masterAddr,
            [MasterPortVar] = masterPort.ToString(CultureInfo.InvariantCulture),
        };

    public override string ToString() => IsDistributed
        ? $"rank {Rank}/{WorldSize} (local {LocalRank}{(LocalWorldSize is { } l ? "/" + l : "")}), rendezvous at {MasterAddr}:{RendezvousPort}"
        : "single process";

    static string? Get(Func<string, string?> get, string name) => get(name) is { } v && v.Trim().Length > 0 ? v.Trim() : null;

    static int Int(string name, string text, int min, int max, string? rangeMessage = null)
    {
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
            throw Error(name, text, "is not an integer");
        if (v < min || v > max) throw Error(name, text, rangeMessage ?? $"must be in {min}..{max}");
        return v;
    }

    static InvalidOperationException Error(string name, string? value, string problem) =>
        new(value is null ? $"environment variable {name} {problem}" : $"environment variable {name}={value} {problem}");
}
