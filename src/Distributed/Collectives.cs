using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>How long the ranks wait for each other.</summary>
/// <param name="Rendezvous">for every rank to arrive and for NCCL's setup (ranks start at different times)</param>
/// <param name="Operation">for one collective; pass a longer one to <see cref="ICollectives.Barrier"/> for known long waits</param>
public sealed record CollectiveTimeouts(TimeSpan Rendezvous, TimeSpan Operation)
{
    public const string RendezvousVar = "QLORANET_RDZV_TIMEOUT", OperationVar = "QLORANET_COLLECTIVE_TIMEOUT";

    /// <summary>5 minutes to gather, 10 minutes per collective (PyTorch's NCCL default).</summary>
    public static CollectiveTimeouts Default { get; } = new(TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(10));

    /// <summary>The defaults, overridden by QLORANET_RDZV_TIMEOUT / QLORANET_COLLECTIVE_TIMEOUT (seconds).</summary>
    public static CollectiveTimeouts FromEnvironment() => new(
        Seconds(RendezvousVar, Default.Rendezvous), Seconds(OperationVar, Default.Operation));

    static TimeSpan Seconds(string name, TimeSpan fallback)
    {
        if (Environment.GetEnvironmentVariable(name) is not { Length: > 0 } text) return fallback;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double s) || !(s > 0) || s > 86400)
            throw new InvalidOperationException($"environment variable {name}={text} must be a number of seconds in (0, 86400]");
        return TimeSpan.FromSeconds(s);
    }
}

/// <summary>
/// The one call that gives a training run its collectives: none needed for a single process; NCCL when the run
/// trains on CUDA; the loopback TCP backend on CPU (tests, CPU-only runs).
/// </summary>
public static class Collectives
{
    /// <param name="env">this process's place in the job (<see cref="DistributedEnvironment.FromProcess"/>)</param>
    /// <param name="cuda">whether the run trains on CUDA (then rank r uses GPU LOCAL_RANK, made current on this thread)</param>
    /// <param name="fingerprint">what must be equal on every rank (see <see cref="Fingerprint"/>); a mismatch stops the rendezvous</param>
    public static ICollectives Connect(DistributedEnvironment env, bool cuda, string fingerprint, CollectiveTimeouts timeouts,
        long bucketBytes = BucketedCollectives.DefaultBucketBytes)
    {
        if (!env.IsDistributed) return new SingleProcessCollectives(cuda ? CUDA : CPU);
        return cuda
            ? NcclCollectives.Connect(env, fingerprint, timeouts.Rendezvous, timeouts.Operation, bucketBytes)
            : LoopbackCollectives.Connect(env, fingerprint, timeouts.Rendezvous, timeouts.Operation, bucketBytes);
    }

    /// <summary>A short, printable digest of what every rank must agree on (e.g. the resolved config's YAML and
    /// the app version): "sha256:" and 16 hex digits.</summary>
    public static string Fingerprint(params string[] parts)
    {
        var bytes = SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n\u0000", parts)));
        return "sha256:" + Convert.ToHexStringLower(bytes)[..16];
    }
}
