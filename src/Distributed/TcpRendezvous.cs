using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace QLoraNet.Distributed;

/// <summary>
/// How the ranks of a job find each other and agree before any collective: rank 0 listens on the rendezvous port
/// (<see cref="DistributedEnvironment.RendezvousPort"/>: MASTER_PORT, or MASTER_PORT + 1 under torchrun, whose agent
/// holds MASTER_PORT) on all interfaces; every other rank connects to MASTER_ADDR:port, retrying with backoff
/// (50 ms doubling to 1 s) until the deadline, since rank 0 may start later. Each joiner sends a hello; rank 0
/// checks it and, once all WORLD_SIZE - 1 have joined, answers each with "go" and a payload (the 128-byte NCCL
/// unique id, which itself names rank 0's NCCL bootstrap address). A hello that disagrees (another world size,
/// another config fingerprint, a rank out of range or taken twice) stops the rendezvous at once on every rank with
/// a message naming both sides. The connections stay open afterwards (<see cref="PeerLinks"/>).
/// <para>
/// Wire format, little-endian. Hello: "QLORANET" (8 bytes), u16 protocol version, i32 rank, i32 world size,
/// u16 length + UTF-8 fingerprint, u16 length + UTF-8 host name. Answer: "QLORANET", u8 status (0 go: u32 length +
/// payload; 1 abort: u16 length + UTF-8 reason). Multi-node: nothing assumes one host; rank 0 binds the wildcard
/// address (IPv6 dual-stack, else IPv4) and joiners resolve MASTER_ADDR; TCP keepalive (10 s idle, 5 s interval,
/// 3 probes) notices a peer host that vanished without closing its sockets.
/// </para>
/// </summary>
public static class TcpRendezvous
{
    public const ushort ProtocolVersion = 1;
    static readonly byte[] Magic = "QLORANET"u8.ToArray();
    const byte Go = 0, Abort = 1;
    const int MaxText = 4096, MaxPayload = 1 << 20;

    /// <summary>Rank 0: starts listening on <paramref name="port"/> (0 = any free port; read <see cref="Host.Port"/>).</summary>
    public static Host Listen(int port) => new(port);

    /// <summary>
    /// The whole rendezvous for this process: rank 0 listens on the environment's rendezvous port and hands out
    /// <paramref name="payloadOnRankZero"/> (called once, on rank 0 only); the others join.
    /// </summary>
    public static PeerLinks Connect(DistributedEnvironment env, string fingerprint, Func<byte[]> payloadOnRankZero, TimeSpan timeout)
    {
        if (env.Rank == 0)
        {
            Host host;
            try { host = Listen(env.RendezvousPort); }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                throw new CollectiveException(0, "rendezvous", $"port {env.RendezvousPort} is in use on this host; set {DistributedEnvironment.RendezvousPortVar} (or MASTER_PORT) to a free port on every rank", inner: e);
            }
            using (host) return host.Accept(env.WorldSize, fingerprint, payloadOnRankZero(), timeout);
        }
        return Join(env.MasterAddr, env.RendezvousPort, env.Rank, env.WorldSize, fingerprint, timeout);
    }

    /// <summary>A non-zero rank: connects to rank 0 (retrying until the deadline), sends its hello, waits for "go".</summary>
    public static PeerLinks Join(string masterAddr, int port, int rank, int worldSize, string fingerprint, TimeSpan timeout)
    {
        if (rank < 1 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"a joining rank is in 1..{worldSize - 1}");
        return JoinAsync(masterAddr, port, rank, worldSize, fingerprint, timeout).GetAwaiter().GetResult();
    }

    static async Task<PeerLinks> JoinAsync(string masterAddr, int port, int rank, int worldSize, string fingerprint, TimeSpan timeout)
    {
        const string op = "rendezvous";
        using var deadline = new CancellationTokenSource(timeout);
        var backoff = TimeSpan.FromMilliseconds(50);
        Socket socket;
        while (true)
        {
            socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(new DnsEndPoint(masterAddr, port), deadline.Token);
                break;
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                socket.Dispose();
                if (deadline.IsCancellationRequested || e is OperationCanceledException)
                    throw new CollectiveException(rank, op, $"could not reach rank 0 at {masterAddr}:{port} within {Seconds(timeout)}"
                        + (e is SocketException se ? $" ({se.SocketErrorCode}: {se.Message})" : "") + "; is rank 0 running, and are MASTER_ADDR and the ports the same on every rank?", 0, e);
                try { await Task.Delay(backoff, deadline.Token); } catch (OperationCanceledException) { }
                backoff = TimeSpan.FromMilliseconds(Math.Min(1000, backoff.TotalMilliseconds * 2));
            }
        }
        Configure(socket);
        var stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            await stream.WriteAsync(Hello(rank, worldSize, fingerprint), deadline.Token);
            var magic = new byte[Magic.Length + 1];
            try { await stream.ReadExactlyAsync(magic, deadline.Token); }
            catch (EndOfStreamException e)
            {
                throw new CollectiveException(rank, op, $"rank 0 at {masterAddr}:{port} closed the connection before the rendezvous completed (it failed or was stopped)", 0, e);
            }
            if (!magic.AsSpan(0, Magic.Length).SequenceEqual(Magic))
                throw new CollectiveException(rank, op, $"the process at {masterAddr}:{port} is not a QLoraNet rendezvous (under torchrun, MASTER_PORT belongs to torchrun's store and ours is MASTER_PORT + 1; or set {DistributedEnvironment.RendezvousPortVar})");
            if (magic[^1] == Abort)
                throw new CollectiveException(rank, op, $"rank 0 stopped the rendezvous: {await ReadText(stream, deadline.Token)}", 0);
            var payload = await ReadBlock(stream, MaxPayload, deadline.Token);
            var streams = new NetworkStream?[worldSize];
            streams[0] = stream;
            var hosts = new string[worldSize];
            Array.Fill(hosts, "");
            hosts[rank] = Dns.GetHostName();
            return new PeerLinks(rank, worldSize, streams, payload, hosts);
        }
        catch (Exception e) when (e is not CollectiveException)
        {
            stream.Dispose();
            if (e is OperationCanceledException)
                throw new CollectiveException(rank, op, $"rank 0 at {masterAddr}:{port} accepted the connection but not every rank joined within {Seconds(timeout)} (started all {worldSize}? same WORLD_SIZE everywhere?)", 0, e);
            throw new CollectiveException(rank, op, $"connection to rank 0 at {masterAddr}:{port} failed: {e.Message}", 0, e);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Rank 0's listening side; <see cref="Accept"/> completes the rendezvous.</summary>
    public sealed class Host : IDisposable
    {
        readonly Socket _listener;

        internal Host(int port)
        {
            if (port < 0 || port > 65535) throw new ArgumentOutOfRangeException(nameof(port), port, "port must be in 0..65535");
            try
            {
                _listener = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp) { DualMode = true };
                _listener.Bind(new IPEndPoint(IPAddress.IPv6Any, port));
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.AddressFamilyNotSupported or SocketError.ProtocolNotSupported)
            {
                _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                _listener.Bind(new IPEndPoint(IPAddress.Any, port));
            }
            _listener.Listen(128);
            Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        }

        /// <summary>The port actually bound (useful when 0 was asked).</summary>
        public int Port { get; }

        /// <summary>Waits until ranks 1..worldSize-1 have joined with matching hellos, then hands out the payload.</summary>
        public PeerLinks Accept(int worldSize, string fingerprint, byte[] payload, TimeSpan timeout)
        {
            if (worldSize < 2) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "a rendezvous needs at least 2 ranks");
            if (payload.Length > MaxPayload) throw new ArgumentException($"payload of {payload.Length} bytes exceeds {MaxPayload}", nameof(payload));
            return AcceptAsync(worldSize, fingerprint, payload, timeout).GetAwaiter().GetResult();
        }

        async Task<PeerLinks> AcceptAsync(int worldSize, string fingerprint, byte[] payload, TimeSpan timeout)
        {
            const string op = "rendezvous";
            using var deadline = new CancellationTokenSource(timeout);
            var streams = new NetworkStream?[worldSize];
            var hosts = new string[worldSize];
            Array.Fill(hosts, "");
            hosts[0] = Dns.GetHostName();
            var hellos = new List<Task<(NetworkStream Stream, HelloMessage? Hello)>>();
            Task<Socket>? accepting = null;
            int joined = 0;
            try
            {
                while (joined < worldSize - 1)
                {
                    accepting ??= _listener.AcceptAsync(deadline.Token).AsTask();
                    var done = await Task.WhenAny(hellos.Append<Task>(accepting));
                    if (done == accepting)
                    {
                        Socket s;
                        try { s = await accepting; }
                        catch (OperationCanceledException) { throw Missing(); }
                        accepting = null;
                        Configure(s);
                        hellos.Add(ReadHello(new NetworkStream(s, ownsSocket: true), deadline.Token));
                        continue;
                    }
                    var task = (Task<(NetworkStream Stream, HelloMessage? Hello)>)done;
                    hellos.Remove(task);
                    var (stream, hello) = await task;
                    if (hello is null) { stream.Dispose(); continue; } // not one of ours (a port scan, a health check): ignore
                    string? problem =
                        hello.Version != ProtocolVersion ? $"rank {hello.Rank} speaks rendezvous protocol {hello.Version}, rank 0 speaks {ProtocolVersion} (run the same build on every rank)"
                        : hello.WorldSize != worldSize ? $"rank {hello.Rank} (host {hello.Host}) says WORLD_SIZE={hello.WorldSize}, rank 0 says WORLD_SIZE={worldSize}; start every rank with the same world size"
                        : hello.Rank < 1 || hello.Rank >= worldSize ? $"a rank from host {hello.Host} says RANK={hello.Rank}, outside 1..{worldSize - 1}"
                        : streams[hello.Rank] != null ? $"two processes say RANK={hello.Rank} (hosts {hosts[hello.Rank]} and {hello.Host}); every rank needs its own RANK"
                        : hello.Fingerprint != fingerprint ? $"rank {hello.Rank} (host {hello.Host}) runs a different configuration: '{hello.Fingerprint}' vs rank 0's '{fingerprint}'"
                        : null;
                    if (problem != null)
                    {
                        await Send(stream, AbortMessage(problem));
                        stream.Dispose();
                        throw new CollectiveException(0, op, problem, hello.Rank);
                    }
                    streams[hello.Rank] = stream;
                    hosts[hello.Rank] = hello.Host;
                    joined++;
                }
                var go = GoMessage(payload);
                for (int r = 1; r < worldSize; r++)
                {
                    try { await streams[r]!.WriteAsync(go, deadline.Token); }
                    catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
                    {
                        throw new CollectiveException(0, op, $"rank {r} (host {hosts[r]}) disconnected before the rendezvous completed", r, e);
                    }
                }
                return new PeerLinks(0, worldSize, streams, payload, hosts);
            }
            catch (CollectiveException e)
            {
                var abort = AbortMessage(e.Message);
                foreach (var s in streams.Where(s => s != null)) { await Send(s!, abort); s!.Dispose(); }
                foreach (var h in hellos) _ = h.ContinueWith(t => { if (t.IsCompletedSuccessfully) t.Result.Stream.Dispose(); }, TaskScheduler.Default);
                throw;
            }

            CollectiveException Missing()
            {
                var absent = Enumerable.Range(1, worldSize - 1).Where(r => streams[r] is null).ToList();
                return new CollectiveException(0, op, $"rank{(absent.Count > 1 ? "s" : "")} {string.Join(", ", absent)} did not join within {Seconds(timeout)} (started? same MASTER_ADDR, MASTER_PORT and WORLD_SIZE everywhere?)", absent[0]);
            }
        }

        public void Dispose() => _listener.Dispose();
    }

    sealed record HelloMessage(ushort Version, int Rank, int WorldSize, string Fingerprint, string Host);

    /// <summary>Reads a hello; null when the peer is not a QLoraNet rank (wrong magic, garbage, silence for 10 s).</summary>
    static async Task<(NetworkStream, HelloMessage?)> ReadHello(NetworkStream stream, CancellationToken deadline)
    {
        using var quick = CancellationTokenSource.CreateLinkedTokenSource(deadline);
        quick.CancelAfter(TimeSpan.FromSeconds(10));
        try
        {
            var head = new byte[Magic.Length + 2 + 4 + 4];
            await stream.ReadExactlyAsync(head, quick.Token);
            if (!head.AsSpan(0, Magic.Length).SequenceEqual(Magic)) return (stream, null);
            ushort version = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(Magic.Length));
            int rank = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(Magic.Length + 2));
            int world = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(Magic.Length + 6));
            string fingerprint = await ReadText(stream, quick.Token);
            string host = await ReadText(stream, quick.Token);
            return (stream, new HelloMessage(version, rank, world, fingerprint, host));
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or InvalidDataException)
        {
            return (stream, null);
        }
    }

    static byte[] Hello(int rank, int worldSize, string fingerprint)
    {
        var m = new MemoryStream();
        m.Write(Magic);
        Span<byte> b = stackalloc byte[10];
        BinaryPrimitives.WriteUInt16LittleEndian(b, ProtocolVersion);
        BinaryPrimitives.WriteInt32LittleEndian(b[2..], rank);
        BinaryPrimitives.WriteInt32LittleEndian(b[6..], worldSize);
        m.Write(b);
        WriteText(m, fingerprint);
        WriteText(m, Dns.GetHostName());
        return m.ToArray();
    }

    static byte[] GoMessage(byte[] payload)
    {
        var m = new MemoryStream();
        m.Write(Magic);
        m.WriteByte(Go);
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)payload.Length);
        m.Write(len);
        m.Write(payload);
        return m.ToArray();
    }

    static byte[] AbortMessage(string reason)
    {
        var m = new MemoryStream();
        m.Write(Magic);
        m.WriteByte(Abort);
        WriteText(m, reason);
        return m.ToArray();
    }

    static async Task Send(NetworkStream s, byte[] message)
    {
        try
        {
            using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await s.WriteAsync(message, quick.Token);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException) { }
    }

    static void WriteText(Stream s, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        if (bytes.Length > MaxText) bytes = bytes[..MaxText];
        Span<byte> len = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)bytes.Length);
        s.Write(len);
        s.Write(bytes);
    }

    static async Task<string> ReadText(NetworkStream s, CancellationToken ct)
    {
        var len = new byte[2];
        await s.ReadExactlyAsync(len, ct);
        int n = BinaryPrimitives.ReadUInt16LittleEndian(len);
        if (n > MaxText) throw new InvalidDataException($"text of {n} bytes");
        var bytes = new byte[n];
        await s.ReadExactlyAsync(bytes, ct);
        return Encoding.UTF8.GetString(bytes);
    }

    static async Task<byte[]> ReadBlock(NetworkStream s, int max, CancellationToken ct)
    {
        var len = new byte[4];
        await s.ReadExactlyAsync(len, ct);
        uint n = BinaryPrimitives.ReadUInt32LittleEndian(len);
        if (n > max) throw new InvalidDataException($"payload of {n} bytes exceeds {max}");
        var bytes = new byte[n];
        await s.ReadExactlyAsync(bytes, ct);
        return bytes;
    }

    /// <summary>No Nagle delay (collectives send small frames and wait for answers); keepalive so a vanished host is noticed.</summary>
    internal static void Configure(Socket s)
    {
        s.NoDelay = true;
        s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
        try
        {
            s.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 10);
            s.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 5);
            s.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
        }
        catch (SocketException) { } // not every OS has the fine-grained options; plain keepalive still applies
    }

    internal static string Seconds(TimeSpan t) => t.TotalSeconds >= 10 ? $"{t.TotalSeconds:F0} s" : $"{t.TotalSeconds:0.###} s";
}
