using System.Buffers.Binary;
using System.Diagnostics;
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
/// <para>
/// All I/O runs on the calling thread: non-blocking sockets, and every wait a poll with the time left to the
/// operation's deadline. Nothing waits for a thread-pool thread: with async I/O, a host whose pool threads are busy
/// (a test runner, a server) and whose CPU is loaded delays the socket completions and the deadline timers for as
/// long as the runtime takes to add pool threads (seconds to minutes), and a healthy peer was named as hung.
/// </para>
/// </summary>
public sealed class LoopbackCollectives : BucketedCollectives
{
    const byte Data = 1, Error = 2, OpAllReduce = 1, OpBroadcast = 2, OpBarrier = 3;
    const int HeaderBytes = 16;

    /// <summary>An error frame's text is a one-line message; more is not ours.</summary>
    const int MaxErrorBytes = 64 << 10;

    readonly PeerLinks _links;

    /// <summary>Takes ownership of the connections of a completed rendezvous.</summary>
    public LoopbackCollectives(PeerLinks links, TimeSpan timeout, long bucketBytes = DefaultBucketBytes)
        : base(links.Rank, links.WorldSize, CPU, timeout, bucketBytes)
    {
        _links = links;
        foreach (int peer in links.Peers) links.Stream(peer).Socket.Blocking = false;
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
            if (Rank == 0) RootAllReduce(b, kind, operation, call, timeout);
            else LeafExchange(b, kind, send: true, operation, call, timeout);
        }
    }

    protected override void BroadcastFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout)
    {
        foreach (var b in buffers)
        {
            if (Rank == 0) RootSend(b, OpBroadcast, operation, call, timeout);
            else LeafExchange(b, OpBroadcast, send: false, operation, call, timeout);
        }
    }

    protected override void Close(bool failed) => _links.Dispose();

    // ---- rank 0 ----

    void RootAllReduce(Tensor buffer, byte opKind, string op, long call, TimeSpan timeout)
    {
        var own = TensorPointer.HostBytes(buffer).ToArray();
        // Every peer's frame is read as it arrives (a peer's large frame fills the socket's buffer and waits for us),
        // and the first peer that fails is named at once (a closed connection is known at once), not after the slowest.
        var frames = _links.Peers.Select(r => new Transfer(r, _links.Stream(r).Socket, new byte[HeaderBytes + own.Length])).ToList();
        try
        {
            Pump(frames, read: true, timeout, op, onHeader: t => CheckHeader(t.Bytes, t.Peer, opKind, buffer.dtype, own.Length, op, call));
        }
        catch (CollectiveException failure)
        {
            TellPeers(failure);
            throw;
        }
        ReductionOrder.SumInto(own, frames.OrderBy(t => t.Peer).Select(t => t.Bytes[HeaderBytes..]).ToList(), buffer.dtype);
        own.CopyTo(TensorPointer.HostBytes(buffer));
        RootSend(buffer, opKind, op, call, timeout);
    }

    void RootSend(Tensor buffer, byte opKind, string op, long call, TimeSpan timeout)
    {
        var frame = Frame(Data, opKind, buffer.dtype, call, TensorPointer.HostBytes(buffer));
        var sends = _links.Peers.Select(r => new Transfer(r, _links.Stream(r).Socket, frame)).ToList();
        try
        {
            Pump(sends, read: false, timeout, op);
        }
        catch (CollectiveException failure)
        {
            TellPeers(failure, sends);
            throw;
        }
    }

    /// <summary>Rank 0 passes its diagnosis to every peer still connected, so they stop with the same message.
    /// <paramref name="sending"/>: the frames of a send that failed; a peer reads whole frames, so one already begun
    /// is finished first, and a peer whose frame cannot be finished is not told (it sees the connection close).</summary>
    void TellPeers(CollectiveException failure, IReadOnlyList<Transfer>? sending = null)
    {
        var text = Encoding.UTF8.GetBytes(failure.Message);
        if (text.Length > MaxErrorBytes) text = text[..MaxErrorBytes];
        var body = new byte[4 + text.Length];
        BinaryPrimitives.WriteInt32LittleEndian(body, failure.FailedRank ?? -1);
        text.CopyTo(body, 4);
        var frame = Frame(Error, 0, ScalarType.Byte, 0, body);
        var quick = Deadline.After(TimeSpan.FromSeconds(2));
        var begun = (sending ?? []).Where(t => t.Done > 0 && !t.Finished).ToList();
        foreach (var t in begun)
            try { SendRest(t.Socket, t.Bytes, ref t.Done, quick); } catch (Exception) { }
        // First what every socket takes at once, then the rest within the same short deadline: a peer that is stuck
        // costs the others nothing.
        var sends = _links.Peers.Where(r => begun.All(t => t.Peer != r || t.Finished))
            .Select(r => new Transfer(r, _links.Stream(r).Socket, frame)).ToList();
        foreach (var t in sends)
            try { SendSome(t.Socket, t.Bytes, ref t.Done); } catch (Exception) { t.Done = t.Bytes.Length; } // gone: nothing to tell
        foreach (var t in sends.Where(t => !t.Finished))
            try { SendRest(t.Socket, t.Bytes, ref t.Done, quick); } catch (Exception) { } // stuck too; it will not need the message
    }

    // ---- ranks 1..N-1 ----

    void LeafExchange(Tensor buffer, byte opKind, bool send, string op, long call, TimeSpan timeout)
    {
        var socket = _links.Stream(0).Socket;
        var bytes = TensorPointer.HostBytes(buffer);
        int length = bytes.Length;
        var deadline = Deadline.After(timeout + Grace(timeout));
        try
        {
            if (send) SendAll(socket, Frame(Data, opKind, buffer.dtype, call, bytes), deadline);
            var head = new byte[HeaderBytes];
            ReceiveAll(socket, head, deadline);
            if (head[0] == Error)
            {
                ulong size = BinaryPrimitives.ReadUInt64LittleEndian(head.AsSpan(8));
                if (size < 4 || size > 4 + MaxErrorBytes)
                    throw new CollectiveException(Rank, op, $"rank 0 sent an error frame of {size} bytes (not the same program?)", 0);
                var body = new byte[(int)size];
                ReceiveAll(socket, body, deadline);
                int failed = BinaryPrimitives.ReadInt32LittleEndian(body);
                throw new CollectiveException(Rank, op, $"rank 0 reports: {Encoding.UTF8.GetString(body, 4, body.Length - 4)}", failed >= 0 ? failed : 0);
            }
            CheckHeader(head, 0, opKind, buffer.dtype, length, op, call);
            var result = new byte[length];
            ReceiveAll(socket, result, deadline);
            result.CopyTo(TensorPointer.HostBytes(buffer));
        }
        catch (TimeoutException e)
        {
            throw new CollectiveException(Rank, op, $"no answer from rank 0 within {TcpRendezvous.Seconds(timeout + Grace(timeout))} (rank 0 or another rank is hung)", 0, e);
        }
        catch (Exception e) when (e is not CollectiveException and not ObjectDisposedException)
        {
            throw PeerFailure(0, op, e);
        }
    }

    static TimeSpan Grace(TimeSpan timeout) => TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.FromSeconds(2).Ticks, TimeSpan.FromSeconds(10).Ticks));

    CollectiveException PeerFailure(int peer, string op, Exception e) => e switch
    {
        CollectiveException ce => ce,
        EndOfStreamException or IOException or SocketException =>
            new CollectiveException(Rank, op, $"{_links.Name(peer)} closed its connection (its process exited or was killed)", peer, e),
        _ => new CollectiveException(Rank, op, $"{_links.Name(peer)}: {e.Message}", peer, e),
    };

    // ---- sockets, on the calling thread ----

    /// <summary>One frame moving between this rank and a peer: <see cref="Bytes"/> (header then body), <see cref="Done"/> of them so far.</summary>
    sealed class Transfer(int peer, Socket socket, byte[] bytes)
    {
        public readonly int Peer = peer;
        public readonly Socket Socket = socket;
        public readonly byte[] Bytes = bytes;
        public int Done;
        public bool Finished => Done == Bytes.Length;
    }

    /// <summary>
    /// Moves every transfer (all reads or all sends) to its end, polling their sockets together until
    /// <paramref name="timeout"/>. <paramref name="onHeader"/> sees a read's header as soon as it is in (to refuse a
    /// wrong frame before its body). A peer whose socket fails is named at once; at the deadline, the unfinished ones.
    /// </summary>
    void Pump(List<Transfer> transfers, bool read, TimeSpan timeout, string op, Action<Transfer>? onHeader = null)
    {
        var deadline = Deadline.After(timeout);
        var pending = transfers.Where(t => !t.Finished).ToList();
        while (pending.Count > 0)
        {
            var ready = pending.Select(t => t.Socket).ToList();
            int micros = deadline.RemainingMicroseconds();
            if (micros > 0)
            {
                if (read) Socket.Select(ready, null, null, micros);
                else Socket.Select(null, ready, null, micros);
            }
            else ready.Clear();
            if (ready.Count == 0 && deadline.Passed)
            {
                var silent = pending.Select(t => t.Peer).Order().ToList();
                throw new CollectiveException(Rank, op, $"{string.Join(", ", silent.Select(_links.Name))} {(read ? "sent" : "took")} nothing within "
                    + $"{TcpRendezvous.Seconds(timeout)} (hung, or far slower than the others)", silent[0]);
            }
            foreach (var t in pending.Where(t => ready.Contains(t.Socket)).ToList())
            {
                try
                {
                    bool headerBefore = t.Done >= HeaderBytes;
                    if (read) ReceiveSome(t.Socket, t.Bytes, ref t.Done);
                    else SendSome(t.Socket, t.Bytes, ref t.Done);
                    if (read && !headerBefore && t.Done >= HeaderBytes) onHeader?.Invoke(t);
                }
                catch (Exception e) when (e is not CollectiveException and not ObjectDisposedException)
                {
                    throw PeerFailure(t.Peer, op, e);
                }
                if (t.Finished) pending.Remove(t);
            }
        }
    }

    /// <summary>Reads what has arrived into bytes[done..]; a closed connection is an <see cref="EndOfStreamException"/>.</summary>
    static void ReceiveSome(Socket s, byte[] bytes, ref int done)
    {
        while (done < bytes.Length)
        {
            int n = s.Receive(bytes, done, bytes.Length - done, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock) return;
            if (error != SocketError.Success) throw new SocketException((int)error);
            if (n == 0) throw new EndOfStreamException("the connection was closed");
            done += n;
        }
    }

    /// <summary>Sends what the socket takes of bytes[done..].</summary>
    static void SendSome(Socket s, byte[] bytes, ref int done)
    {
        while (done < bytes.Length)
        {
            int n = s.Send(bytes, done, bytes.Length - done, SocketFlags.None, out SocketError error);
            if (error == SocketError.WouldBlock) return;
            if (error != SocketError.Success) throw new SocketException((int)error);
            done += n;
        }
    }

    /// <summary>Reads exactly <paramref name="bytes"/>.Length bytes, or throws <see cref="TimeoutException"/> at the deadline.</summary>
    static void ReceiveAll(Socket s, byte[] bytes, Deadline deadline)
    {
        int done = 0;
        while (true)
        {
            ReceiveSome(s, bytes, ref done);
            if (done == bytes.Length) return;
            Wait(s, SelectMode.SelectRead, deadline);
        }
    }

    /// <summary>Sends all of <paramref name="bytes"/>, or throws <see cref="TimeoutException"/> at the deadline.</summary>
    static void SendAll(Socket s, byte[] bytes, Deadline deadline)
    {
        int done = 0;
        SendRest(s, bytes, ref done, deadline);
    }

    static void SendRest(Socket s, byte[] bytes, ref int done, Deadline deadline)
    {
        while (true)
        {
            SendSome(s, bytes, ref done);
            if (done == bytes.Length) return;
            Wait(s, SelectMode.SelectWrite, deadline);
        }
    }

    static void Wait(Socket s, SelectMode mode, Deadline deadline)
    {
        int micros = deadline.RemainingMicroseconds();
        if (micros <= 0 || !s.Poll(micros, mode) && deadline.Passed) throw new TimeoutException();
    }

    /// <summary>A point in time on the monotonic clock.</summary>
    readonly struct Deadline(long ticks)
    {
        /// <summary>Now plus <paramref name="span"/>; a span of years is as good as none (and cannot overflow).</summary>
        public static Deadline After(TimeSpan span) =>
            new(Stopwatch.GetTimestamp() + (long)(Math.Min(span.TotalSeconds, 1e8) * Stopwatch.Frequency));

        public bool Passed => Stopwatch.GetTimestamp() >= ticks;

        /// <summary>Time left, clamped to what one poll takes (int microseconds, ~35 min; the caller polls again).</summary>
        public int RemainingMicroseconds()
        {
            double micros = (ticks - Stopwatch.GetTimestamp()) * 1e6 / Stopwatch.Frequency;
            return micros <= 0 ? 0 : (int)Math.Min(int.MaxValue, Math.Ceiling(micros));
        }
    }

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
