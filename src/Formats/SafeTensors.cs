using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// The writing side of the .safetensors format (<see cref="SafeTensorsFile"/> reads it). The header must list every
/// tensor's offsets before the data, so callers give the layout (name, dtype, shape) up front and produce each
/// tensor on demand: a streaming merge then holds one tensor at a time. Files are written through
/// <see cref="AtomicFile"/>, so an interrupted write never leaves a valid-looking partial file.
/// </summary>
public static class SafeTensors
{
    public sealed record Entry(string Name, ScalarType DType, long[] Shape);

    /// <summary>Writes tensors that are already in memory (CPU or not; they are copied to the CPU contiguously).</summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var byName = list.ToDictionary(kv => kv.Key, kv => kv.Value);
        var layout = list.Select(kv => new Entry(kv.Key, kv.Value.dtype, kv.Value.shape)).ToList();
        WriteStreaming(path, layout, name => byName[name], metadata, disposeProduced: false);
    }

    /// <summary>
    /// Writes tensors produced one at a time by <paramref name="produce"/> in layout order. Each produced tensor
    /// must match its entry's dtype and shape; it is disposed after writing when <paramref name="disposeProduced"/>.
    /// </summary>
    public static void WriteStreaming(string path, IReadOnlyList<Entry> layout, Func<string, Tensor> produce,
        IReadOnlyDictionary<string, string>? metadata = null, bool disposeProduced = true)
    {
        byte[] header = BuildHeader(layout, metadata);
        AtomicFile.Write(path, fs =>
        {
            fs.Write(BitConverter.GetBytes((ulong)header.Length));
            fs.Write(header);
            foreach (var e in layout)
            {
                var t = produce(e.Name);
                try
                {
                    if (t.dtype != e.DType || !t.shape.SequenceEqual(e.Shape))
                        throw new ArgumentException($"{path}: tensor '{e.Name}' is {t.dtype} [{string.Join(", ", t.shape)}] but the layout says {e.DType} [{string.Join(", ", e.Shape)}]");
                    using var cpu = t.device_type == DeviceType.CPU && t.is_contiguous() ? t.alias() : t.cpu().contiguous();
                    NativeTensorMemory.ForEachChunk(cpu, chunk => fs.Write(chunk));
                }
                finally
                {
                    if (disposeProduced) t.Dispose();
                }
            }
        });
    }

    static byte[] BuildHeader(IReadOnlyList<Entry> layout, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>());
            meta.TryAdd("format", "pt");
            foreach (var kv in meta) w.WriteString(kv.Key, kv.Value);
            w.WriteEndObject();
            long offset = 0;
            var seen = new HashSet<string>();
            foreach (var e in layout)
            {
                if (!seen.Add(e.Name)) throw new ArgumentException($"duplicate tensor name '{e.Name}'");
                long bytes = e.Shape.Aggregate(1L, (a, b) => a * b) * SafeTensorsDType.ElementSize(e.DType);
                w.WriteStartObject(e.Name);
                w.WriteString("dtype", SafeTensorsDType.Name(e.DType));
                w.WriteStartArray("shape");
                foreach (var d in e.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        // Pad with spaces to a multiple of 8 so the data section is aligned (as the reference writer does).
        var bytesOut = ms.ToArray().ToList();
        while (bytesOut.Count % 8 != 0) bytesOut.Add((byte)' ');
        return bytesOut.ToArray();
    }
}
