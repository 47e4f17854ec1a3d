namespace QLoraNet.Distributed;

/// <summary>
/// A collective, the rendezvous or the communicator setup failed on this rank: a peer died or hung (no data within
/// the timeout), the ranks disagree (world size, config, tensor sizes, operation order), or the backend (NCCL, CUDA,
/// sockets) reported an error. The message is one line: <c>rank R: OPERATION: what happened</c>, naming the peer
/// rank that caused it when it is known (<see cref="FailedRank"/>). After one, the communicator is unusable:
/// every later call throws again; dispose it and let the process exit non-zero (a launcher stops the others).
/// </summary>
public sealed class CollectiveException : Exception
{
    /// <summary>The rank that raised it (this process).</summary>
    public int Rank { get; }

    /// <summary>The operation, e.g. "all_reduce #12", "broadcast #1", "barrier #3", "rendezvous", "nccl init".</summary>
    public string Operation { get; }

    /// <summary>The peer that died, hung or disagreed, when known.</summary>
    public int? FailedRank { get; }

    public CollectiveException(int rank, string operation, string problem, int? failedRank = null, Exception? inner = null)
        : base($"rank {rank}: {operation}: {problem}", inner)
    {
        Rank = rank;
        Operation = operation;
        FailedRank = failedRank;
    }
}
