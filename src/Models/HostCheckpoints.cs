using QLoraNet.Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Where training.checkpoints_on_host keeps the recomputed layers' inputs between their forward and their backward
/// (<see cref="LayerCheckpoint"/>; torchtune's activation offloading, for the checkpoints alone). One per model; each
/// forward pass under checkpointing begins a <see cref="Pass"/>, which holds its layers' stashes in order, so that a
/// layer's backward knows which input is needed next.
/// On a GPU the copies run on a stream of their own (CU_STREAM_NON_BLOCKING), ordered against stream 0, where libtorch
/// and our kernels run, by events only, so they overlap the layers' compute instead of queueing behind it:
/// <list type="bullet">
/// <item>forward: stream 0 marks the input ready; the copy stream copies it to a pinned host buffer; stream 0 waits
/// for that copy before any work enqueued after the layer's, so the caller may free the input as soon as the layer
/// returns (the caching allocator hands its memory only to work queued after the free);</item>
/// <item>backward: the first stash taken is brought back on demand; every take then starts bringing back the stash
/// before it in the pass (the next layer backward will need), into memory allocated on stream 0, while this layer's
/// backward runs; stream 0 waits for that copy only when the next take comes.</item>
/// </list>
/// Each copy crosses the bus once each way per layer and micro-batch; at most two checkpoints are on the device at a
/// time during backward. Pinned buffers are pooled by size and reused step after step (a buffer goes back to the
/// pool once its copy back is enqueued: later copies into it queue behind that one on the same stream), so after the
/// first step nothing is allocated. A stash whose backward never runs (a forward under grad that is dropped) returns
/// its buffer when it is collected.
/// On a CPU the host is the device: a stash is a clone and nothing moves (the path the CPU tests take, with the
/// same bookkeeping of which stash is brought back ahead).
/// </summary>
public sealed class HostCheckpoints : IDisposable
{
    readonly object _lock = new();
    readonly Dictionary<long, Stack<IntPtr>> _free = new();   // pinned buffers by size in bytes
    IntPtr _context, _stream;                                // the copy stream, in the context it was created in
    bool _disposed;
    long _pinnedBytes, _stashed, _aheadLoads, _onDemandLoads;

    /// <summary>Pinned host memory this instance holds, in use or pooled, in bytes.</summary>
    public long PinnedBytes { get { lock (_lock) return _pinnedBytes; } }

    /// <summary>What this instance has done since construction: layer inputs stashed, and of those brought back,
    /// how many while the layer after them ran its backward (ahead) and how many when their own backward began (on
    /// demand: the first of each pass, or one out of order).</summary>
    public readonly record struct Counts(long Stashed, long Ahead, long OnDemand)
    {
        public static Counts operator -(Counts a, Counts b) => new(a.Stashed - b.Stashed, a.Ahead - b.Ahead, a.OnDemand - b.OnDemand);
    }

    /// <summary>The counts so far.</summary>
    public Counts Done => new(Interlocked.Read(ref _stashed), Interlocked.Read(ref _aheadLoads), Interlocked.Read(ref _onDemandLoads));

    /// <summary>A new forward pass: its stashes, in the order the layers run.</summary>
    public Pass BeginPass()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new Pass(this);
    }

    /// <summary>The stashes of one forward pass, in layer order.</summary>
    public sealed class Pass
    {
        readonly HostCheckpoints _owner;
        readonly List<Stash?> _stashes = new();   // null once taken

        internal Pass(HostCheckpoints owner) => _owner = owner;

        /// <summary>A host copy of <paramref name="hidden"/> (B, T, hidden). On a GPU call <see cref="Stash.AfterLayer"/>
        /// once the layer's own work is enqueued.</summary>
        public Stash Put(Tensor hidden)
        {
            lock (_stashes)
            {
                var stash = new Stash(_owner, this, _stashes.Count, hidden);
                _stashes.Add(stash);
                Interlocked.Increment(ref _owner._stashed);
                return stash;
            }
        }

        /// <summary>Marks <paramref name="taken"/> taken and returns the stash to bring back next: the latest one before
        /// it not yet taken (the layer whose backward comes next), or null.</summary>
        internal Stash? Taken(Stash taken)
        {
            lock (_stashes)
            {
                _stashes[taken.Index] = null;
                for (int i = taken.Index - 1; i >= 0; i--)
                    if (_stashes[i] is { } next) return next;
                return null;
            }
        }
    }

    /// <summary>One layer's input, held in host memory until its backward takes it back.</summary>
    public sealed class Stash
    {
        readonly HostCheckpoints _owner;
        readonly Pass _pass;
        readonly long[] _shape;
        readonly ScalarType _dtype;
        readonly Device _device;
        readonly long _bytes;
        readonly object _gate = new();
        Tensor? _clone;                  // CPU: the copy itself
        IntPtr _host;                    // GPU: the pinned buffer, until the copy back is enqueued
        CudaDriver.Event? _copied;       // GPU: recorded on the copy stream after the copy out, then after the copy back
        Tensor? _source;                 // GPU: a contiguous copy of the input made for the copy out, freed after it
        Tensor? _back;                   // GPU: the device tensor the copy back fills
        bool _taken, _aheadStarted;

        internal int Index { get; }

        internal Stash(HostCheckpoints owner, Pass pass, int index, Tensor hidden)
        {
            (_owner, _pass, Index) = (owner, pass, index);
            (_shape, _dtype, _device) = (hidden.shape, hidden.dtype, hidden.device);
            _bytes = hidden.numel() * hidden.element_size();
            if (hidden.device_type != DeviceType.CUDA)
            {
                _clone = hidden.detach().clone().DetachFromDisposeScope();
                GC.SuppressFinalize(this);
                return;
            }
            var source = hidden.is_contiguous() ? hidden : (_source = hidden.contiguous().DetachFromDisposeScope());
            _host = owner.Rent(_bytes);
            _copied = owner.Enqueue(toHost: true, _host, CudaDriver.DataPointer(source), _bytes);
        }

        /// <summary>GPU: stream 0 waits for the copy out before any work enqueued after this call, so the input's memory
        /// is not reused before it has been read. Call once the layer's own work is enqueued (the copy overlaps it).</summary>
        public void AfterLayer()
        {
            if (_copied is null) return;
            _owner.WaitOnStream0(_copied);
            _source?.Dispose();
            _source = null;
        }

        /// <summary>The input back on its device (B, T, hidden), owned by the caller; then starts bringing back the
        /// stash the next backward will take.</summary>
        public Tensor Take()
        {
            Tensor result;
            lock (_gate)
            {
                if (_taken) throw new InvalidOperationException("a layer checkpoint was taken back twice (its backward ran twice)");
                _taken = true;
                if (_clone is not null)
                {
                    result = _clone;
                    _clone = null;
                    if (!_aheadStarted) Interlocked.Increment(ref _owner._onDemandLoads);
                }
                else
                {
                    if (_back is null)
                    {
                        Interlocked.Increment(ref _owner._onDemandLoads);
                        BringBack();
                    }
                    _owner.WaitOnStream0(_copied!);
                    result = _back!;
                    _back = null;
                    _copied!.Dispose();
                    _copied = null;
                }
            }
            GC.SuppressFinalize(this);
            _pass.Taken(this)?.BringBackAhead();
            return result;
        }

        void BringBackAhead()
        {
            lock (_gate)
            {
                if (_taken || _aheadStarted) return;
                _aheadStarted = true;
                Interlocked.Increment(ref _owner._aheadLoads);
                if (_clone is null && _back is null) BringBack();
            }
        }

        // GPU: the copy back into memory allocated now on stream 0; the buffer goes back to the pool at once (any
        // later copy into it is queued on the copy stream behind this one).
        void BringBack()
        {
            _back = torch.empty(_shape, _dtype, _device).DetachFromDisposeScope();   // (B, T, hidden)
            _copied!.Dispose();
            _copied = _owner.Enqueue(toHost: false, _host, CudaDriver.DataPointer(_back), _bytes);
            _owner.Return(_host, _bytes);
            _host = IntPtr.Zero;
        }

        /// <summary>A stash never taken (its backward never ran) gives its buffer back and destroys its event when
        /// collected (its tensors have finalizers of their own).</summary>
        ~Stash()
        {
            if (_host != IntPtr.Zero) _owner.Return(_host, _bytes);
            _copied?.Dispose();
        }
    }

    /// <summary>Copy stream work ordered after stream 0's work so far; returns the event recorded after the copy.</summary>
    CudaDriver.Event Enqueue(bool toHost, IntPtr host, IntPtr device, long bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        EnsureStream();
        return InContext(() =>
        {
            using var ready = new CudaDriver.Event(timing: false);
            ready.Record();                                  // stream 0: the input written / the destination allocated
            CudaDriver.StreamWait(_stream, ready);
            if (toHost) CudaDriver.CopyToHostAsync(host, device, bytes, _stream);
            else CudaDriver.CopyToDeviceAsync(device, host, bytes, _stream);
            var done = new CudaDriver.Event(timing: false);
            done.Record(_stream);
            return done;
        });
    }

    void WaitOnStream0(CudaDriver.Event copied) => InContext(() =>
    {
        CudaDriver.StreamWait(IntPtr.Zero, copied);
        return 0;
    });

    /// <summary>Runs <paramref name="work"/> with the copy stream's context current (the caller's thread may have
    /// another device's, or none: backward runs on libtorch's device thread), as <see cref="CudaDriver.Launch"/> does.</summary>
    T InContext<T>(Func<T> work)
    {
        bool pushed = CudaDriver.PushContextIfOther(_context);
        try
        {
            return work();
        }
        finally
        {
            if (pushed) CudaDriver.PopContext();
        }
    }

    void EnsureStream()
    {
        lock (_lock)
        {
            if (_stream != IntPtr.Zero) return;
            _context = CudaDriver.CurrentContext();
            _stream = CudaDriver.CreateNonBlockingStream();
        }
    }

    IntPtr Rent(long bytes)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_free.TryGetValue(bytes, out var pool) && pool.Count > 0) return pool.Pop();
            _pinnedBytes += bytes;
        }
        EnsureStream();
        return InContext(() => CudaDriver.AllocatePinned(bytes));
    }

    void Return(IntPtr host, long bytes)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                // Dispose waited for the copy stream; nothing can be queued on it any more.
                CudaDriver.FreePinned(host);
                _pinnedBytes -= bytes;
                return;
            }
            if (!_free.TryGetValue(bytes, out var pool)) _free[bytes] = pool = new Stack<IntPtr>();
            pool.Push(host);
        }
    }

    /// <summary>Waits for the copy stream, then frees the pooled buffers and the stream; buffers still held by
    /// stashes are freed when those give them back.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            if (_stream == IntPtr.Zero) return;
            InContext(() =>
            {
                CudaDriver.SynchronizeStream(_stream);
                foreach (var (bytes, pool) in _free)
                    while (pool.Count > 0)
                    {
                        CudaDriver.FreePinned(pool.Pop());
                        _pinnedBytes -= bytes;
                    }
                _free.Clear();
                CudaDriver.DestroyStream(_stream);
                return 0;
            });
            _stream = IntPtr.Zero;
        }
    }
}
