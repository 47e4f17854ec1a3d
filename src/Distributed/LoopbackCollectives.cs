using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// A CPU backend over the rendezvous's TCP star, for CI and CPU-only runs: exact and deterministic rather than
/// fast. All-reduce: every rank sends its buffer to rank 0, which sums them in a fixed order (<see cref="ReductionOrder"/>)
/// and sends the result back; broadcast: rank 0 sends its buffer. Every frame carries the operation and its number,
/// so ranks that call different operations, or pass different sizes, fail with a message naming both sides.
/// <para>
/// Faults: a peer whose connection closes (its process exited) is named at once; a peer that sends nothing within
/// <see cref="ICollectives.Timeout"/> is named as hung. Rank 0 tells every other rank what went wrong before
/// closing; the others wait a grace longer (a quarter of the timeout, at least 2 s, at most 10 s) so that rank 0's diagnosis, which names
/// the culprit, reaches them first. Frame: u8 kind (1 data, 2 error), u8 operation (1 all_reduce, 2 broadcast, 3 barrier),
/// u16 dtype, u32 call number, u64 byte length, then the bytes (error: i32 failed rank, UTF-8 message).
/// </para>
/// </summary>
public sealed class LoopbackCollectives : BucketedCollectives
{
    const byte Data = 1, Error = 2, OpAllReduce = 1, OpBroadcast = 2, OpBarrier = 3;
    const int HeaderBytes = 16;

    readonly PeerLinks _links;

    /// <summary>Takes ownership of the connections of a completed rendezvous.</summary>
    public LoopbackCollectives(PeerLinks links, TimeSpan timeout, long bucketBytes = DefaultBucketBytes)
        : base(links.Rank, links.WorldSize, CPU, timeout, bucketBytes)
    {
        _links = links;
    }

    /// <summary>Rendezvous (per <paramref name="env"/>) and connect; rank 0's payload is empty.</summary>
    public static LoopbackCollectives Connect(DistributedEnvironment env, string fingerprint, TimeSpan rendezvousTimeout, TimeSpan timeout,
        long bucketBytes = DefaultBucketBytes) =>
        new(TcpRendezvous.Connect(env, fingerprint, () => [], rendezvousTimeout), timeout, bucketBytes);

    protected override void AllReduceFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout)
    {
        byte kind = operation.StartsWith("barrier", StringComparison.Ordinal) ? OpBarrier : OpAllReduce;
        foreach (var b in buffers)
        {
            if (Rank == 0) RootAllReduce(b, kind, operation, call, timeout).GetAwaiter().GetResult();
            else LeafExchange(b, kind, send: true, operation, call, timeout).GetAwaiter().GetResult();
        }
    }

    protected override void BroadcastFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout)
    {
        foreach (var b in buffers)
        {
            if (Rank == 0) RootSend(b, OpBroadcast, operation, call, timeout).GetAwaiter().GetResult();
            else LeafExchange(b, OpBroadcast, send: false, operation, call, timeout).GetAwaiter().GetResult();
        }
    }

    protected override void Close(bool failed) => _links.Dispose();

    // ---- rank 0 ----

    async Task RootAllReduce(Tensor buffer, byte opKind, string op, long call, TimeSpan timeout)
    {
        var own = TensorPointer.HostBytes(buffer).ToArray();
        using var deadline = new CancellationTokenSource(timeout);
        var receives = _links.Peers.ToDictionary(r => r, r => Receive(r, opKind, buffer.dtype, own.Length, op, call, deadline.Token));
        var pending = receives.Values.ToList();
        try
        {
            // Fail on the first peer that fails (a closed connection is known at once), not after the slowest.
            while (pending.Count > 0)
            {
                var done = await Task.WhenAny(pending);
                pending.Remove(done);
                await done;
            }
        }
        catch (Exception e)
        {
            var failure = Describe(e, op, timeout, receives);
            await TellPeers(failure);
            throw failure;
        }
        ReductionOrder.SumInto(own, receives.OrderBy(kv => kv.Key).Select(kv => kv.Value.Result).ToList(), buffer.dtype);
        own.CopyTo(TensorPointer.HostBytes(buffer));
        await RootSend(buffer, opKind, op, call, timeout);
    }

    async Task RootSend(Tensor buffer, byte opKind, string op, long call, TimeSpan timeout)
    {
        var frame = Frame(Data, opKind, buffer.dtype, call, TensorPointer.HostBytes(buffer));
        using var deadline = new CancellationTokenSource(timeout);
        var sends = _links.Peers.ToDictionary(r => r, r => Send(r, frame, deadline.Token));
        try { await Task.WhenAll(sends.Values); }
        catch (Exception e)
        {
            var failure = Describe(e, op, timeout, sends);
            await TellPeers(failure);
            throw failure;
        }
    }

    async Task<byte[]> Receive(int peer, byte opKind, ScalarType dtype, int length, string op, long call, CancellationToken ct)
    {
        var s = _links.Stream(peer);
        var head = new byte[HeaderBytes];
        await s.ReadExactlyAsync(head, ct).ConfigureAwait(false);
        CheckHeader(head, peer, opKind, dtype, length, op, call);
        var body = new byte[length];
        await s.ReadExactlyAsync(body, ct).ConfigureAwait(false);
        return body;
    }

    async Task Send(int peer, byte[] frame, CancellationToken ct) => await _links.Stream(peer).WriteAsync(frame, ct).ConfigureAwait(false);

    /// <summary>Turns the first failure among the peers' tasks into one message naming the peer.</summary>
    CollectiveException Describe<T>(Exception e, string op, TimeSpan timeout, IReadOnlyDictionary<int, T> tasks) where T : Task
    {
        if (e is CollectiveException ce) return ce;
        int? peer = tasks.Where(kv => kv.Value.IsFaulted && kv.Value.Exception!.InnerException is not OperationCanceledException).Select(kv => (int?)kv.Key).FirstOrDefault();
        if (peer is { } p) return PeerFailure(p, op, tasks[p].Exception!.InnerException!);
        var silent = tasks.Where(kv => !kv.Value.IsCompletedSuccessfully).Select(kv => kv.Key).Order().ToList();
        if (silent.Count == 0) return new CollectiveException(Rank, op, e.Message, inner: e);
        return new CollectiveException(Rank, op,
            $"{string.Join(", ", silent.Select(_links.Name))} sent nothing within {TcpRendezvous.Seconds(timeout)} (hung, or far slower than the others)", silent[0], e);
    }

    CollectiveException PeerFailure(int peer, string op, Exception e) => e switch
    {
        CollectiveException ce => ce,
        EndOfStreamException or IOException or SocketException or ObjectDisposedException =>
            new CollectiveException(Rank, op, $"{_links.Name(peer)} closed its connection (its process exited or was killed)", peer, e),
        _ => new CollectiveException(Rank, op, $"{_links.Name(peer)}: {e.Message}", peer, e),
    };

    /// <summary>Rank 0 passes its diagnosis to every peer still connected, so they stop with the same message.</summary>
    async Task TellPeers(CollectiveException failure)
    {
        var text = Encoding.UTF8.GetBytes(failure.Message);
        var body = new byte[4 + text.Length];
        BinaryPrimitives.WriteInt32LittleEndian(body, failure.FailedRank ?? -1);
        text.CopyTo(body, 4);
        var frame = Frame(Error, 0, ScalarType.Byte, 0, body);
        using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await Task.WhenAll(_links.Peers.Select(async r =>
        {
            try { await _links.Stream(r).WriteAsync(frame, quick.Token).ConfigureAwait(false); }
            catch (Exception) { } // that peer is gone too; it will not need the message
        }));
    }

    // ---- ranks 1..N-1 ----

    async Task LeafExchange(Tensor buffer, byte opKind, bool send, string op, long call, TimeSpan timeout)
    {
        var s = _links.Stream(0);
        var bytes = TensorPointer.HostBytes(buffer);
        int length = bytes.Length;
        using var deadline = new CancellationTokenSource(timeout + Grace(timeout));
        try
        {
            if (send) await s.WriteAsync(Frame(Data, opKind, buffer.dtype, call, bytes), deadline.Token).ConfigureAwait(false);
            var head = new byte[HeaderBytes];
            await s.ReadExactlyAsync(head, deadline.Token).ConfigureAwait(false);
            if (head[0] == Error)
            {
                var body = new byte[checked((int)BinaryPrimitives.ReadUInt64LittleEndian(head.AsSpan(8)))];
                await s.ReadExactlyAsync(body, deadline.Token).ConfigureAwait(false);
                int failed = BinaryPrimitives.ReadInt32LittleEndian(body);
                throw new CollectiveException(Rank, op, $"rank 0 reports: {Encoding.UTF8.GetString(body, 4, body.Length - 4)}", failed >= 0 ? failed : 0);
            }
            CheckHeader(head, 0, opKind, buffer.dtype, length, op, call);
            var result = new byte[length];
            await s.ReadExactlyAsync(result, deadline.Token).ConfigureAwait(false);
            result.CopyTo(TensorPointer.HostBytes(buffer));
        }
        catch (OperationCanceledException e)
        {
            throw new CollectiveException(Rank, op, $"no answer from rank 0 within {TcpRendezvous.Seconds(timeout + Grace(timeout))} (rank 0 or another rank is hung)", 0, e);
        }
        catch (Exception e) when (e is not CollectiveException)
        {
            throw PeerFailure(0, op, e);
        }
    }

    static TimeSpan Grace(TimeSpan timeout) => TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.FromSeconds(2).Ticks, TimeSpan.FromSeconds(10).Ticks));

    // ---- frames ----

    static byte[] Frame(byte kind, byte opKind, ScalarType dtype, long call, ReadOnlySpan<byte> body)
    {
        var f = new byte[HeaderBytes + body.Length];
        f[0] = kind;
        f[1] = opKind;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(2), (ushort)dtype);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(4), (uint)call);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(8), (ulong)body.Length);
        body.CopyTo(f.AsSpan(HeaderBytes));
        return f;
    }

    void CheckHeader(byte[] head, int peer, byte opKind, ScalarType dtype, int length, string op, long call)
    {
        string peerName = _links.Name(peer);
        if (head[0] != Data) throw new CollectiveException(Rank, op, $"{peerName} sent a frame of unknown kind {head[0]} (not the same program?)", peer);
        uint theirCall = BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(4));
        if (head[1] != opKind || theirCall != (uint)call)
            throw new CollectiveException(Rank, op, $"{peerName} is at {OpName(head[1])} #{theirCall}: the ranks called different collectives (every rank must call the same ones in the same order)", peer);
        var theirType = (ScalarType)BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(2));
        ulong theirLength = BinaryPrimitives.ReadUInt64LittleEndian(head.AsSpan(8));
        if (theirType != dtype || theirLength != (ulong)length)
            throw new CollectiveException(Rank, op, $"{peerName} passed {theirLength} bytes of {theirType}, this rank {length} bytes of {dtype}: the ranks' tensor lists differ", peer);
    }

    static string OpName(byte kind) => kind switch { OpAllReduce => "all_reduce", OpBroadcast => "broadcast", OpBarrier => "barrier", _ => $"operation {kind}" };
}
