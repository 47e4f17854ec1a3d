using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Models;

/// <summary>
/// Keys and values of past tokens for incremental decoding, one preallocated buffer per layer of shape
/// (B, kvHeads, capacity, headDim). Storing the kv heads before grouped-query repetition keeps the cache
/// numHeads/numKvHeads times smaller. Each layer writes its new keys at [Length, Length + T) during a forward;
/// the model then calls <see cref="Advance"/> once, so all layers agree on the offset.
/// </summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor[] keys;
    readonly Tensor[] values;

    public KvCache(int numLayers, long batch, long numKvHeads, long headDim, long capacity, ScalarType dtype, Device device)
    {
        Capacity = capacity;
        keys = new Tensor[numLayers];
        values = new Tensor[numLayers];
        for (int i = 0; i < numLayers; i++)
        {
            // Detached from any enclosing dispose scope: the cache outlives the per-step scopes of a generation loop.
            keys[i] = zeros([batch, numKvHeads, capacity, headDim], dtype, device).DetachFromDisposeScope();
            values[i] = zeros([batch, numKvHeads, capacity, headDim], dtype, device).DetachFromDisposeScope();
        }
    }

    /// <summary>Number of tokens whose keys and values are cached (the position of the next token).</summary>
    public long Length { get; private set; }

    public long Capacity { get; }

    /// <summary>Writes (B, kvHeads, T, headDim) keys/values of layer <paramref name="layer"/> after the cached ones and
    /// returns views of all of them, (B, kvHeads, Length + T, headDim).</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (Length + t > Capacity)
            throw new InvalidOperationException($"KV cache full: {Length} cached + {t} new tokens > capacity {Capacity}; allocate a larger cache");
        keys[layer].narrow(2, Length, t).copy_(k);
        values[layer].narrow(2, Length, t).copy_(v);
        return (keys[layer].narrow(2, 0, Length + t), values[layer].narrow(2, 0, Length + t));
    }

    /// <summary>Marks <paramref name="t"/> more tokens as cached; called by the model after all layers appended.</summary>
    public void Advance(long t) => Length += t;

    public void Dispose()
    {
        foreach (var t in keys.Concat(values)) t.Dispose();
    }
}
