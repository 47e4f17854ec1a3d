using QLoraNet.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Peft;

/// <summary>
/// The LoRA factors of a model's adapters in the compute dtype, made for all of them by one batched operation per
/// forward pass of the model (<see cref="ForwardPasses"/>): on the pass's first request, the fp32 A's and B's are
/// concatenated flat (torch.cat, which copies many inputs per launch) and cast once; every factor handed out is a
/// view of that buffer. Why: cast one tensor at a time, a 7B QLoRA step launched ~224 tiny kernels for them (per
/// layer five casts, a cat and a copy for the q/k/v adapters' shared A, each a few microseconds of run time and
/// gap, ~1 ms a step on an H200); batched, a pass launches ~3.
///
/// Layout: [A₀, A₁, …, Aₙ₋₁, B₀, …, Bₙ₋₁] flattened, adapters in the order they joined (<see cref="LoraApplier"/>:
/// the model's linear order). Adapters reading one input (q, k, v; gate, up) are adjacent in that order, so their
/// row-concatenated A (<see cref="SharedLoraDown"/>) is a view of the buffer too, with no cat of its own.
/// Where the compute dtype is the factors' own (fp32 on the CPU) no factor is copied: the parameter itself is handed
/// out, as its no-op cast was; only a concatenated A needs a copy, made for all A's at once.
///
/// A buffer serves one pass: the parameters change only between passes (the optimizer step and a load copy into them
/// in place; a device move replaces them) and every pass starts with <see cref="ForwardPasses.Next"/>. A buffer is
/// made again in a new pass, for another dtype or device, and when adapters join or leave. It is made without a
/// graph: <see cref="LoraLinear"/> uses it only where autograd needs none, as it used the per-tensor casts before.
/// One per model (shared by its adapters), no process-wide state. Owns its buffers: those of the previous pass are
/// disposed when a new pass starts, all of them when the last adapter leaves (<see cref="Dispose"/>); callers get
/// aliases their dispose scope disposes.
/// </summary>
internal sealed class LoraFactorCasts(ForwardPasses passes) : IDisposable
{
    readonly List<LoraLinear> adapters = [];
    readonly Dictionary<(ScalarType DType, DeviceType Type, int Index), Batch> batches = [];
    long pass = -1;     // the pass the batches are for
    long layout;        // bumped when adapters join or leave: a batch made before holds other offsets

    /// <summary>The counter of the model's forward passes.</summary>
    public ForwardPasses Passes { get; } = passes;

    /// <summary>How many batched operations (one cat, then one cast where the dtype differs) have been made: one per
    /// pass for each compute dtype and device asked for. For tests.</summary>
    internal long BatchesMade { get; private set; }

    /// <summary>Adds <paramref name="adapter"/>'s factors to the batch, after those already there.</summary>
    public void Add(LoraLinear adapter)
    {
        if (adapters.Any(a => ReferenceEquals(a, adapter))) return;
        adapters.Add(adapter);
        layout++;
    }

    /// <summary>Takes <paramref name="adapter"/>'s factors out (it is disposed); the last one out frees the buffers.</summary>
    public void Remove(LoraLinear adapter)
    {
        int i = adapters.FindIndex(a => ReferenceEquals(a, adapter));
        if (i < 0) return;
        adapters.RemoveAt(i);
        layout++;
        if (adapters.Count == 0) Dispose();
    }

    /// <summary><paramref name="adapter"/>'s A (r, in) in <paramref name="dtype"/> for this pass.</summary>
    /// <returns>a handle the caller's dispose scope disposes.</returns>
    public Tensor A(LoraLinear adapter, ScalarType dtype) => Factor(adapter, adapter.A, dtype, isA: true);

    /// <summary><paramref name="adapter"/>'s B (out, r) in <paramref name="dtype"/> for this pass.</summary>
    /// <returns>a handle the caller's dispose scope disposes.</returns>
    public Tensor B(LoraLinear adapter, ScalarType dtype) => Factor(adapter, adapter.B, dtype, isA: false);

    /// <summary>[A₀; A₁; …] (Σr, in) of <paramref name="group"/> (one input width, one device) in
    /// <paramref name="dtype"/> for this pass: a view of the batch where their A's are adjacent there, in this
    /// order (the adapters joined in it); otherwise a cat of their A's, made on every call.</summary>
    /// <returns>a handle the caller's dispose scope disposes.</returns>
    public Tensor ConcatenatedA(IReadOnlyList<LoraLinear> group, ScalarType dtype)
    {
        if (BatchFor(dtype, group[0].A).Rows(group) is { } rows) return rows;
        using var scope = NewDisposeScope();
        using (no_grad())
            return torch.cat([.. group.Select(a => A(a, dtype))]).MoveToOuterDisposeScope();
    }

    Tensor Factor(LoraLinear adapter, Tensor factor, ScalarType dtype, bool isA)
    {
        if (factor.dtype == dtype) return factor.alias();   // the cast would be a no-op: nothing to copy
        return BatchFor(dtype, factor).Factor(adapter, isA)
            ?? throw new InvalidOperationException("the adapter asking for its factors has not joined the batch");
    }

    /// <summary>The batch for <paramref name="dtype"/> on <paramref name="like"/>'s device in the current pass,
    /// made now when there is none yet (and the previous pass's freed when this is a new pass).</summary>
    Batch BatchFor(ScalarType dtype, Tensor like)
    {
        long current = Passes.Current;
        if (current != pass)
        {
            Dispose();
            pass = current;
        }
        var key = (dtype, like.device_type, like.device_index);
        if (batches.TryGetValue(key, out var batch) && batch.Layout == layout) return batch;
        batch?.Dispose();
        batch = new Batch([.. adapters.Where(a => a.A.device_type == key.device_type && a.A.device_index == key.device_index)], dtype, layout);
        batches[key] = batch;
        BatchesMade++;
        return batch;
    }

    /// <summary>Frees the buffers; a later request makes them again.</summary>
    public void Dispose()
    {
        foreach (var batch in batches.Values) batch.Dispose();
        batches.Clear();
    }

    /// <summary>
    /// One flat buffer of the members' factors in one dtype on one device: their A's, then (where a cast is needed)
    /// their B's, each flattened, in member order. Views onto it are made when first asked for and kept.
    /// </summary>
    sealed class Batch : IDisposable
    {
        readonly Dictionary<LoraLinear, int> index = new(ReferenceEqualityComparer.Instance);
        readonly long[] aOffset, bOffset;
        readonly long[][] aShape, bShape;
        readonly Tensor flat;
        readonly Tensor?[] aView, bView;
        readonly Dictionary<(int First, int Count), Tensor> rows = [];

        public long Layout { get; }

        public Batch(LoraLinear[] members, ScalarType dtype, long layout)
        {
            Layout = layout;
            int n = members.Length;
            (aOffset, bOffset, aShape, bShape, aView, bView) = (new long[n], new long[n], new long[n][], new long[n][], new Tensor?[n], new Tensor?[n]);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var parts = new List<Tensor>(2 * n);
            long offset = 0;
            for (int i = 0; i < n; i++)
            {
                index[members[i]] = i;
                var a = members[i].A;
                (aOffset[i], aShape[i]) = (offset, a.shape);
                parts.Add(a.reshape(-1));
                offset += a.numel();
            }
            for (int i = 0; i < n; i++)
            {
                var b = members[i].B;
                bShape[i] = b.shape;
                if (b.dtype == dtype) { bOffset[i] = -1; continue; }   // handed out as itself (Factor), never from here
                bOffset[i] = offset;
                parts.Add(b.reshape(-1));
                offset += b.numel();
            }
            var cat = torch.cat(parts, 0);
            flat = (cat.dtype == dtype ? cat : cat.to(dtype)).DetachFromDisposeScope();
        }

        /// <summary>A member's factor, or null when it is not a member.</summary>
        public Tensor? Factor(LoraLinear adapter, bool isA)
        {
            if (!index.TryGetValue(adapter, out int i)) return null;
            var views = isA ? aView : bView;
            long offset = isA ? aOffset[i] : bOffset[i];
            long[] shape = isA ? aShape[i] : bShape[i];
            return (views[i] ??= View(offset, shape)).alias();
        }

        /// <summary>The rows of the group's A's when they are members, consecutive in this order; else null.</summary>
        public Tensor? Rows(IReadOnlyList<LoraLinear> group)
        {
            if (!index.TryGetValue(group[0], out int first)) return null;
            long rowCount = 0, width = aShape[first][1];
            for (int k = 0; k < group.Count; k++)
            {
                if (!index.TryGetValue(group[k], out int i) || i != first + k || aShape[i][1] != width) return null;
                rowCount += aShape[i][0];
            }
            if (!rows.TryGetValue((first, group.Count), out var view))
                rows[(first, group.Count)] = view = View(aOffset[first], [rowCount, width]);
            return view.alias();
        }

        /// <summary>flat[offset, offset + numel(shape)) viewed as <paramref name="shape"/>, owned by the batch.</summary>
        Tensor View(long offset, long[] shape)
        {
            using var scope = NewDisposeScope();
            return flat.narrow(0, offset, shape.Aggregate(1L, (p, s) => p * s)).view(shape).DetachFromDisposeScope();
        }

        public void Dispose()
        {
            foreach (var v in aView.Concat(bView)) v?.Dispose();
            foreach (var v in rows.Values) v.Dispose();
            flat.Dispose();
        }
    }
}
