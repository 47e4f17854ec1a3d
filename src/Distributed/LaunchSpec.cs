namespace QLoraNet.Distributed;

/// <summary>What <see cref="ProcessLauncher"/> starts: <see cref="WorldSize"/> copies of one command on this host.</summary>
/// <param name="FileName">the program (e.g. this app's own executable, or dotnet)</param>
/// <param name="Arguments">its arguments, the same for every rank</param>
/// <param name="WorldSize">number of ranks (processes)</param>
public sealed record LaunchSpec(string FileName, IReadOnlyList<string> Arguments, int WorldSize)
{
    /// <summary>MASTER_ADDR for the children: one host, so the loopback address.</summary>
    public string MasterAddr { get; init; } = "127.0.0.1";

    /// <summary>MASTER_PORT; 0 = a free port found by binding port 0 (a small race with other programs, as torchrun's).</summary>
    public int MasterPort { get; init; }

    /// <summary>After a rank fails: how long the others get to stop by themselves (their collectives notice a dead
    /// peer at once and report what they saw) before they are sent SIGTERM.</summary>
    public TimeSpan FailureGrace { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>After SIGTERM: how long before SIGKILL.</summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Extra environment for every child (a null value removes the variable).</summary>
    public IReadOnlyDictionary<string, string?> Environment { get; init; } = new Dictionary<string, string?>();

    public string? WorkingDirectory { get; init; }
}
