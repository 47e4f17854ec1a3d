using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Distributed;

/// <summary>
/// Collectives on CUDA tensors through NCCL (libnccl.so.2 from the PyTorch install; <see cref="NcclLibrary"/>),
/// one rank per GPU. <see cref="Connect"/>: select the GPU (LOCAL_RANK, <see cref="CudaDevices"/>), rendezvous to
/// hand out rank 0's ncclUniqueId (<see cref="TcpRendezvous"/>), then ncclCommInitRankConfig as a non-blocking
/// communicator. Operations run on the legacy default stream (stream handle 0), the stream libtorch uses by default
/// and our own kernel launches use, so they are ordered after the kernels that produced the gradients and before
/// those that read the result; each call then waits, polling an event, ncclCommGetAsyncError and the peers'
/// rendezvous connections, until the work is done or the timeout passes. On timeout or error the communicator is
/// aborted (ncclCommAbort) and a <see cref="CollectiveException"/> names this rank, the operation and, when a
/// peer's connection closed, that peer.
/// <para>
/// NVLink SHARP multicast (NVLS) is never used: NCCL_NVLS_ENABLE must be 0. When it is unset this sets it to 0 in
/// the process environment before NCCL reads it; any other value is refused.
/// </para>
/// </summary>
public sealed unsafe class NcclCollectives : BucketedCollectives
{
    public const string NvlsVar = "NCCL_NVLS_ENABLE";

    readonly NcclLibrary _nccl;
    readonly PeerLinks _links;
    readonly IntPtr _context;
    readonly PeerWatch _watch;
    IntPtr _comm;
    bool _broken; // aborted after an error: no goodbye, no finalize

    NcclCollectives(NcclLibrary nccl, PeerLinks links, IntPtr context, int localRank, TimeSpan timeout, long bucketBytes)
        : base(links.Rank, links.WorldSize, new Device(DeviceType.CUDA, localRank), timeout, bucketBytes)
    {
        _nccl = nccl;
        _links = links;
        _context = context;
        _watch = new PeerWatch(links);
    }

    /// <summary>Library path and version, for logs.</summary>
    public string Library => $"NCCL {_nccl.VersionText} ({_nccl.Path})";

    /// <summary>
    /// Selects GPU LOCAL_RANK on this thread, rendezvous, creates the communicator. <paramref name="rendezvousTimeout"/>
    /// bounds the wait for every rank to arrive and for NCCL's own setup.
    /// </summary>
    public static NcclCollectives Connect(DistributedEnvironment env, string fingerprint, TimeSpan rendezvousTimeout, TimeSpan timeout,
        long bucketBytes = DefaultBucketBytes)
    {
        const string op = "nccl init";
        if (!env.IsDistributed) throw new ArgumentException("NCCL collectives need WORLD_SIZE > 1", nameof(env));
        try
        {
            string? nvls = NativeEnvironment.Get(NvlsVar);
            if (nvls is null) NativeEnvironment.SetDefault(NvlsVar, "0");
            else if (nvls.Trim() != "0")
                throw new CollectiveException(env.Rank, op, $"{NvlsVar}={nvls}: NVLink multicast (NVLS) is not used by QLoraNet; unset it or set it to 0");
            var context = CudaDevices.Select(env.LocalRank);
            var nccl = NcclLibrary.Load();
            var links = TcpRendezvous.Connect(env, fingerprint, () => NewUniqueId(nccl, env.Rank), rendezvousTimeout);
            NcclCollectives? self = null;
            try
            {
                if (links.Payload.Length != NcclUniqueId.Size)
                    throw new CollectiveException(env.Rank, op, $"rank 0 sent a {links.Payload.Length}-byte id, NCCL's is {NcclUniqueId.Size}");
                self = new NcclCollectives(nccl, links, context, env.LocalRank, timeout, bucketBytes);
                self.Init(links.Payload.Span, rendezvousTimeout);
                return self;
            }
            catch
            {
                if (self != null) self.Dispose();
                else links.Dispose();
                throw;
            }
        }
        catch (Exception e) when (e is not CollectiveException)
        {
            throw new CollectiveException(env.Rank, op, e.Message, inner: e);
        }
    }

    static byte[] NewUniqueId(NcclLibrary nccl, int rank)
    {
        NcclUniqueId id;
        int rc = nccl.GetUniqueId(&id);
        if (rc != NcclLibrary.Success) throw new CollectiveException(rank, "nccl init", $"ncclGetUniqueId: {nccl.Describe(rc)}");
        return new ReadOnlySpan<byte>(id.Internal, NcclUniqueId.Size).ToArray();
    }

    void Init(ReadOnlySpan<byte> idBytes, TimeSpan timeout)
    {
        const string op = "nccl init";
        NcclUniqueId id;
        idBytes.CopyTo(new Span<byte>(id.Internal, NcclUniqueId.Size));
        var config = NcclConfig.NonBlocking();
        using var current = new CurrentContext(_context);
        IntPtr comm;
        int rc = _nccl.CommInitRankConfig(&comm, WorldSize, id, Rank, &config);
        _comm = comm;
        if (rc != NcclLibrary.Success && rc != NcclLibrary.InProgress)
            throw Failure(op, $"ncclCommInitRankConfig: {_nccl.Describe(rc, comm)}");
        WaitComm(op, Stopwatch.StartNew(), timeout);
    }

    protected override void AllReduceFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout)
    {
        CheckNoPeerLeft(operation);
        var clock = Stopwatch.StartNew();
        using var current = new CurrentContext(_context);
        foreach (var b in buffers)
        {
            var p = TensorPointer.Of(b);
            int rc = _nccl.AllReduce(p, p, (nuint)b.numel(), DataType(b.dtype), NcclLibrary.Sum, _comm, IntPtr.Zero);
            Enqueued(rc, operation, clock, timeout);
        }
        WaitStream(operation, clock, timeout);
    }

    protected override void BroadcastFlat(IReadOnlyList<Tensor> buffers, string operation, long call, TimeSpan timeout)
    {
        CheckNoPeerLeft(operation);
        var clock = Stopwatch.StartNew();
        using var current = new CurrentContext(_context);
        foreach (var b in buffers)
        {
            // Broadcast copies bytes: any dtype goes as uint8.
            var p = TensorPointer.Of(b);
            int rc = _nccl.Broadcast(p, p, (nuint)(b.numel() * b.ElementSize), NcclLibrary.Uint8, 0, _comm, IntPtr.Zero);
            Enqueued(rc, operation, clock, timeout);
        }
        WaitStream(operation, clock, timeout);
    }

    static int DataType(ScalarType t) => t switch
    {
        ScalarType.Float32 => NcclLibrary.Float32,
        ScalarType.Float64 => NcclLibrary.Float64,
        ScalarType.BFloat16 => NcclLibrary.BFloat16,
        ScalarType.Float16 => NcclLibrary.Float16,
        _ => throw new ArgumentException($"NCCL sum of {t} is not supported here"),
    };

    /// <summary>A non-blocking call returns ncclInProgress until it is really enqueued (e.g. while NCCL connects
    /// peers lazily on first use); nothing else may be called on the communicator meanwhile.</summary>
    void Enqueued(int rc, string op, Stopwatch clock, TimeSpan timeout)
    {
        if (rc == NcclLibrary.InProgress) WaitComm(op, clock, timeout);
        else if (rc != NcclLibrary.Success) throw Failure(op, _nccl.Describe(rc, _comm));
    }

    void WaitComm(string op, Stopwatch clock, TimeSpan timeout)
    {
        var pace = new WaitPace();
        while (true)
        {
            int state;
            int rc = _nccl.CommGetAsyncError(_comm, &state);
            if (rc != NcclLibrary.Success) throw Failure(op, $"ncclCommGetAsyncError: {_nccl.Describe(rc, _comm)}");
            if (state == NcclLibrary.Success) return;
            if (state != NcclLibrary.InProgress) throw Failure(op, _nccl.Describe(state, _comm));
            CheckPeersAndClock(op, clock, timeout);
            pace.Pause();
        }
    }

    /// <summary>Waits until the work queued so far on the default stream is done, watching for NCCL errors, a peer
    /// that exited, and the deadline.</summary>
    void WaitStream(string op, Stopwatch clock, TimeSpan timeout)
    {
        CudaDriverApi.Check(CudaDriverApi.cuEventCreate(out var ev, CudaDriverApi.EventDisableTiming), "cuEventCreate");
        try
        {
            CudaDriverApi.Check(CudaDriverApi.cuEventRecord(ev, IntPtr.Zero), "cuEventRecord");
            var pace = new WaitPace();
            while (true)
            {
                int rc = CudaDriverApi.cuEventQuery(ev);
                if (rc == 0) return;
                if (rc != CudaDriverApi.NotReady) CudaDriverApi.Check(rc, "cuEventQuery");
                int state;
                if (_nccl.CommGetAsyncError(_comm, &state) == NcclLibrary.Success && state != NcclLibrary.Success && state != NcclLibrary.InProgress)
                    throw Failure(op, _nccl.Describe(state, _comm));
                CheckPeersAndClock(op, clock, timeout);
                pace.Pause();
            }
        }
        finally
        {
            CudaDriverApi.cuEventDestroy(ev);
        }
    }

    void CheckPeersAndClock(string op, Stopwatch clock, TimeSpan timeout)
    {
        if (_watch.Died is { } gone) throw Failure(op, $"{_links.Name(gone)} closed its connection (its process exited or was killed)", gone);
        if (clock.Elapsed > timeout)
            throw Failure(op, $"not finished within {TcpRendezvous.Seconds(timeout)}: a peer rank is hung or far slower"
                + (Rank == 0 ? "" : " (or rank 0 is)"));
    }

    /// <summary>Before a new operation: a peer that closed its communicator normally has done its last collective,
    /// so waiting for it would only end at the timeout. (During an operation its goodbye is no failure: it finished
    /// its part of this very operation before closing.)</summary>
    void CheckNoPeerLeft(string op)
    {
        if (_watch.Left is { } r)
            throw Failure(op, $"{_links.Name(r)} has already closed its communicator (it finished or stopped: the ranks' calls are out of step)", r);
    }

    /// <summary>Aborts the communicator (so nothing more waits on it) and makes the exception.</summary>
    CollectiveException Failure(string op, string problem, int? peer = null)
    {
        _broken = true;
        Abort();
        return new CollectiveException(Rank, op, problem, peer);
    }

    void Abort()
    {
        if (_comm == IntPtr.Zero) return;
        using var current = new CurrentContext(_context);
        _nccl.CommAbort(_comm);
        _comm = IntPtr.Zero;
    }

    protected override void Close(bool failed)
    {
        failed |= _broken;
        if (!failed && _comm != IntPtr.Zero)
        {
            // Finalize flushes this rank's outstanding work; bounded, since a peer may be gone.
            using var current = new CurrentContext(_context);
            int rc = _nccl.CommFinalize(_comm);
            var clock = Stopwatch.StartNew();
            int state = rc == NcclLibrary.InProgress ? NcclLibrary.InProgress : rc;
            while (state == NcclLibrary.InProgress && clock.Elapsed < TimeSpan.FromSeconds(30) && _watch.Died is null)
            {
                Thread.Sleep(1);
                if (_nccl.CommGetAsyncError(_comm, &state) != NcclLibrary.Success) break;
            }
            if (state == NcclLibrary.Success)
            {
                _nccl.CommDestroy(_comm);
                _comm = IntPtr.Zero;
            }
        }
        Abort();
        _watch.Close(goodbye: !failed);
        _watch.Dispose();
        _links.Dispose();
    }

    /// <summary>
    /// The pause between two polls of a wait. SpinWait's default would sleep 1 ms (really ~1.1 ms on Linux) after
    /// ~50 polls, i.e. after some 100 us, so every wait longer than that (each gradient all-reduce: ~0.5 ms for a 7B
    /// LoRA's 67 MB at 178 GB/s) ended up to a millisecond late, on the step's critical path, several times a step.
    /// The training thread has nothing else to do meanwhile, so it yields its core (cheap to get back) for the first
    /// <see cref="BusyFor"/> and only then sleeps a millisecond between polls (long waits: a slow peer, a hang).
    /// </summary>
    struct WaitPace
    {
        static readonly TimeSpan BusyFor = TimeSpan.FromMilliseconds(20);
        long _start;

        public void Pause()
        {
            if (_start == 0) _start = Stopwatch.GetTimestamp();
            if (Stopwatch.GetElapsedTime(_start) < BusyFor)
            {
                if (!Thread.Yield()) Thread.SpinWait(64);
            }
            else Thread.Sleep(1);
        }
    }

    /// <summary>Makes this rank's device context current for NCCL and CUDA calls on this thread, restoring the
    /// previous one after (libtorch's device guards may have left another current).</summary>
    readonly struct CurrentContext : IDisposable
    {
        readonly IntPtr _previous;

        public CurrentContext(IntPtr context)
        {
            CudaDriverApi.Check(CudaDriverApi.cuCtxGetCurrent(out _previous), "cuCtxGetCurrent");
            if (_previous != context) CudaDriverApi.Check(CudaDriverApi.cuCtxSetCurrent(context), "cuCtxSetCurrent");
        }

        public void Dispose()
        {
            if (_previous != IntPtr.Zero) CudaDriverApi.cuCtxSetCurrent(_previous);
        }
    }
}
