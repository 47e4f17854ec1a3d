using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// The small constant tensors the tensor paths index into (thresholds, code values, byte-to-pair tables), built once
/// per device from the C# tables and kept for the life of the process, so a forward never copies them host-to-device.
/// </summary>
static class CodeTables
{
    static readonly ConcurrentDictionary<(string Name, string Device), Tensor> Cache = new();

    /// <summary>A cached float32 tensor of <paramref name="values"/> on <paramref name="device"/>.</summary>
    public static Tensor Float(string name, Device device, Func<float[]> values) =>
        Cache.GetOrAdd((name, device.ToString()), _ => tensor(values(), device: device).DetachFromDisposeScope());

    /// <summary>A cached uint8 tensor of <paramref name="values"/> on <paramref name="device"/>.</summary>
    public static Tensor Bytes(string name, Device device, Func<byte[]> values) =>
        Cache.GetOrAdd((name, device.ToString()), _ => tensor(values(), device: device).DetachFromDisposeScope());

    /// <summary>
    /// The 256 x 2 table byte -> (value of high nibble, value of low nibble): one index_select unpacks two codes, the
    /// even-indexed element coming from the high nibble (bitsandbytes' packing).
    /// </summary>
    public static Tensor NibblePairs(string name, Device device, float[] nibbleValues) =>
        Cache.GetOrAdd((name + "/pairs", device.ToString()), _ =>
        {
            var pairs = new float[512];
            for (int b = 0; b < 256; b++)
            {
                pairs[2 * b] = nibbleValues[b >> 4];
                pairs[2 * b + 1] = nibbleValues[b & 0xF];
            }
            return tensor(pairs, [256, 2], device: device).DetachFromDisposeScope();
        });
}
