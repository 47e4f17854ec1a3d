using System.Net.Sockets;

namespace QLoraNet.Distributed;

/// <summary>
/// The TCP connections a completed <see cref="TcpRendezvous"/> leaves open, in a star: rank 0 holds one to every
/// other rank, every other rank one to rank 0. The loopback backend carries its data over them; the NCCL backend
/// keeps them only to notice at once when a peer process exits (its socket closes). Also the payload rank 0 handed
/// out (the NCCL unique id) and each rank's host name, for messages.
/// </summary>
public sealed class PeerLinks : IDisposable
{
    readonly NetworkStream?[] _streams;

    internal PeerLinks(int rank, int worldSize, NetworkStream?[] streams, byte[] payload, string[] hosts)
    {
        Rank = rank;
        WorldSize = worldSize;
        _streams = streams;
        Payload = payload;
        Hosts = hosts;
    }

    public int Rank { get; }
    public int WorldSize { get; }

    /// <summary>What rank 0 passed to every rank at the rendezvous (on rank 0 too).</summary>
    public ReadOnlyMemory<byte> Payload { get; }

    /// <summary>Host name of each rank as it reported itself ("" where unknown: on non-zero ranks, the others).</summary>
    public IReadOnlyList<string> Hosts { get; }

    /// <summary>The connection to <paramref name="peer"/>: on rank 0 any other rank, elsewhere only rank 0.</summary>
    internal NetworkStream Stream(int peer) => _streams[peer] ?? throw new InvalidOperationException($"rank {Rank} has no connection to rank {peer}");

    /// <summary>The ranks this rank is connected to.</summary>
    internal IEnumerable<int> Peers => Enumerable.Range(0, WorldSize).Where(r => _streams[r] != null);

    /// <summary>"rank 2 (node-b)" when the host is known.</summary>
    internal string Name(int rank) => Hosts[rank] is { Length: > 0 } h ? $"rank {rank} ({h})" : $"rank {rank}";

    public void Dispose()
    {
        foreach (var s in _streams)
        {
            if (s is null) continue;
            try { s.Socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            s.Dispose();
        }
    }
}
