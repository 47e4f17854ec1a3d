using System.Text;

namespace QLoraNet.Formats;

/// <summary>One tensor of a GGUF file to be written: its name, shape in torch order (outermost first) and type.</summary>
public sealed record GgufTensorSpec(string Name, long[] Shape, GgmlType Type)
{
    public long ByteSize => GgmlTypes.ByteSize(Type, Shape);
}

/// <summary>
/// Writes GGUF v3 files (ggml-org/llama.cpp docs/gguf.md). Layout, all little-endian:
/// <code>
///   uint32 magic "GGUF" | uint32 version 3 | uint64 tensor_count | uint64 kv_count
///   kv_count x { string key | uint32 value_type | value }          (string = uint64 length + UTF-8 bytes, no NUL)
///   tensor_count x { string name | uint32 n_dims | n_dims x uint64 ne | uint32 ggml_type | uint64 offset }
///   zero padding to `general.alignment` (default 32)
///   tensor data, each tensor at its offset (relative to the data start) and padded to the alignment
/// </code>
/// <c>ne</c> lists dimensions in ggml order, innermost (the contiguous row) first: the reverse of torch's shape.
/// The tensor infos carry every offset, so sizes are computed from (type, shape) first and the data is then
/// produced one tensor at a time by the caller's <c>writeData</c>: only one tensor is ever in memory.
/// The file is written through <see cref="AtomicFile"/> (a temporary sibling, renamed when complete, deleted on any
/// failure), so a .gguf that exists is always a complete one.
/// </summary>
public static class GgufWriter
{
    public const uint Magic = 0x46554747;       // "GGUF" read as a little-endian uint32
    public const uint Version = 3;
    public const uint DefaultAlignment = 32;    // GGUF_DEFAULT_ALIGNMENT
    public const string AlignmentKey = "general.alignment";

    /// <param name="writeData">writes exactly <see cref="GgufTensorSpec.ByteSize"/> bytes of the given tensor.</param>
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata,
        IReadOnlyList<GgufTensorSpec> tensors, Action<GgufTensorSpec, Stream> writeData, bool overwrite = false)
    {
        if (File.Exists(path) && !overwrite)
            throw new IOException($"{path} already exists; pass --overwrite to replace it");
        uint alignment = Alignment(metadata);
        var offsets = DataOffsets(tensors, alignment);
        AtomicFile.Write(path, fs =>
        {
            using (var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true))
            {
                WriteHeader(w, metadata, tensors, offsets);
                w.Flush();
            }
            Pad(fs, alignment);
            long dataStart = fs.Position;
            for (int i = 0; i < tensors.Count; i++)
            {
                var t = tensors[i];
                long begin = fs.Position;
                if (begin - dataStart != offsets[i]) throw new InvalidOperationException($"{path}: tensor '{t.Name}' would start at {begin - dataStart}, not at its offset {offsets[i]}");
                writeData(t, fs);
                long written = fs.Position - begin;
                if (written != t.ByteSize)
                    throw new InvalidOperationException($"{path}: tensor '{t.Name}' wrote {written} bytes but {GgmlTypes.Name(t.Type)} [{string.Join(", ", t.Shape)}] takes {t.ByteSize}");
                Pad(fs, alignment);
            }
        });
    }

    static uint Alignment(IReadOnlyList<KeyValuePair<string, GgufValue>> metadata)
    {
        foreach (var (key, value) in metadata)
        {
            if (key != AlignmentKey) continue;
            uint a = value.AsUInt32;
            if (a == 0 || (a & (a - 1)) != 0) throw new ArgumentException($"{AlignmentKey} must be a power of two, not {a}");
            return a;
        }
        return DefaultAlignment;
    }

    /// <summary>Each tensor's offset from the start of the data section: running sizes, each rounded up to the alignment.</summary>
    public static long[] DataOffsets(IReadOnlyList<GgufTensorSpec> tensors, uint alignment = DefaultAlignment)
    {
        var offsets = new long[tensors.Count];
        long next = 0;
        var seen = new HashSet<string>();
        for (int i = 0; i < tensors.Count; i++)
        {
            if (!seen.Add(tensors[i].Name)) throw new ArgumentException($"duplicate tensor name '{tensors[i].Name}'");
            offsets[i] = next;
            next = AlignUp(next + tensors[i].ByteSize, alignment);
        }
        return offsets;
    }

    static long AlignUp(long n, uint alignment) => (n + alignment - 1) / alignment * alignment;

    static void Pad(Stream s, uint alignment)
    {
        long pad = AlignUp(s.Position, alignment) - s.Position;
        if (pad > 0) s.Write(new byte[pad]);
    }

    static void WriteHeader(BinaryWriter w, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata,
        IReadOnlyList<GgufTensorSpec> tensors, long[] offsets)
    {
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        var keys = new HashSet<string>();
        foreach (var (key, value) in metadata)
        {
            if (!keys.Add(key)) throw new ArgumentException($"duplicate GGUF metadata key '{key}'");
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value);
        }
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]);   // ggml order: innermost first
            w.Write((uint)t.Type);
            w.Write((ulong)offsets[i]);
        }
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static void WriteValue(BinaryWriter w, GgufValue v)
    {
        switch (v.Type)
        {
            case GgufValueType.UInt32: w.Write((uint)v.Value); break;
            case GgufValueType.Int32: w.Write((int)v.Value); break;
            case GgufValueType.UInt64: w.Write((ulong)v.Value); break;
            case GgufValueType.Float32: w.Write((float)v.Value); break;
            case GgufValueType.Bool: w.Write((byte)((bool)v.Value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)v.Value); break;
            case GgufValueType.Array: WriteArray(w, v); break;
            default: throw new NotSupportedException($"writing GGUF values of type {v.Type} is not implemented");
        }
    }

    static void WriteArray(BinaryWriter w, GgufValue v)
    {
        w.Write((uint)v.ElementType);
        switch (v.ElementType)
        {
            case GgufValueType.String:
                var strings = v.AsArray<string>();
                w.Write((ulong)strings.Count);
                foreach (var s in strings) WriteString(w, s);
                break;
            case GgufValueType.Float32:
                var floats = v.AsArray<float>();
                w.Write((ulong)floats.Count);
                foreach (var f in floats) w.Write(f);
                break;
            case GgufValueType.Int32:
                var ints = v.AsArray<int>();
                w.Write((ulong)ints.Count);
                foreach (var i in ints) w.Write(i);
                break;
            default: throw new NotSupportedException($"writing GGUF arrays of {v.ElementType} is not implemented");
        }
    }
}
