using System.Text;

namespace QLoraNet.Formats;

/// <summary>One tensor info of a GGUF file: <see cref="Dims"/> in ggml order (innermost first), offset in the data section.</summary>
public sealed record GgufTensorInfo(string Name, long[] Dims, GgmlType Type, long Offset)
{
    /// <summary>The shape in torch order (outermost first).</summary>
    public long[] Shape => Dims.Reverse().ToArray();
    public long ByteSize => GgmlTypes.ByteSize(Type, Shape);
}

/// <summary>
/// A minimal GGUF v3 reader (the layout is described on <see cref="GgufWriter"/>): metadata, tensor infos and raw
/// tensor bytes. It exists to check what QLoraNet writes, so it reads only the value types the writer can produce
/// plus the plain scalars, and validates every length and offset against the file.
/// </summary>
public sealed class GgufReader : IDisposable
{
    readonly FileStream _stream;

    public string Path { get; }
    public uint Version { get; }
    public IReadOnlyList<KeyValuePair<string, GgufValue>> Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    public long DataStart { get; }
    public uint Alignment { get; }

    GgufReader(string path, FileStream stream, uint version, List<KeyValuePair<string, GgufValue>> metadata,
        List<GgufTensorInfo> tensors, long dataStart, uint alignment)
    {
        Path = path;
        _stream = stream;
        Version = version;
        Metadata = metadata;
        Tensors = tensors;
        DataStart = dataStart;
        Alignment = alignment;
    }

    public GgufValue this[string key] =>
        Metadata.FirstOrDefault(kv => kv.Key == key).Value ?? throw new KeyNotFoundException($"{Path}: no metadata key {SafeText.Quote(key)}");

    public bool Has(string key) => Metadata.Any(kv => kv.Key == key);

    public GgufTensorInfo Tensor(string name) =>
        Tensors.FirstOrDefault(t => t.Name == name) ?? throw new KeyNotFoundException($"{Path}: no tensor {SafeText.Quote(name)}");

    public static GgufReader Open(string path)
    {
        var fs = UserFile.OpenRead(path, "GGUF file");
        try
        {
            using var r = new BinaryReader(fs, Encoding.UTF8, leaveOpen: true);
            if (fs.Length < 24) throw Corrupt(path, $"file is {fs.Length} bytes, shorter than the 24-byte GGUF header");
            uint magic = r.ReadUInt32();
            if (magic != GgufWriter.Magic) throw Corrupt(path, $"magic is 0x{magic:X8}, not \"GGUF\"");
            uint version = r.ReadUInt32();
            if (version != 3) throw Corrupt(path, $"version {version} is not supported (only GGUF v3)");
            ulong nTensors = r.ReadUInt64();
            ulong nKv = r.ReadUInt64();
            if (nTensors > 1_000_000 || nKv > 1_000_000) throw Corrupt(path, $"implausible counts ({nTensors} tensors, {nKv} keys)");

            var metadata = new List<KeyValuePair<string, GgufValue>>();
            for (ulong i = 0; i < nKv; i++)
            {
                string key = ReadString(r, path);
                if (metadata.Any(kv => kv.Key == key)) throw Corrupt(path, $"metadata key {SafeText.Quote(key)} appears twice");
                var type = (GgufValueType)r.ReadUInt32();
                metadata.Add(new(key, ReadValue(r, type, path, key)));
            }
            var alignValue = metadata.FirstOrDefault(kv => kv.Key == GgufWriter.AlignmentKey).Value;
            if (alignValue is not null && alignValue.Type != GgufValueType.UInt32)
                throw Corrupt(path, $"'{GgufWriter.AlignmentKey}' must be a uint32, not {alignValue.Type}");
            uint alignment = alignValue?.AsUInt32 ?? GgufWriter.DefaultAlignment;
            if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > 1 << 20)
                throw Corrupt(path, $"alignment {alignment} is not a power of two up to 1 MiB");

            var tensors = new List<GgufTensorInfo>();
            for (ulong i = 0; i < nTensors; i++)
            {
                string name = ReadString(r, path);
                if (tensors.Any(t => t.Name == name)) throw Corrupt(path, $"tensor {SafeText.Quote(name)} appears twice");
                uint nDims = r.ReadUInt32();
                if (nDims > 4) throw Corrupt(path, $"tensor {SafeText.Quote(name)} has {nDims} dims (ggml allows at most 4)");
                var dims = new long[nDims];
                for (int d = 0; d < nDims; d++)
                {
                    ulong dim = r.ReadUInt64();
                    if (dim > (ulong)fs.Length * 2) throw Corrupt(path, $"tensor {SafeText.Quote(name)} dimension {dim} is larger than the file could hold");
                    dims[d] = (long)dim;
                }
                var type = (GgmlType)r.ReadUInt32();
                if (!Enum.IsDefined(type)) throw Corrupt(path, $"tensor {SafeText.Quote(name)} has ggml type {(uint)type}, which this reader does not know");
                ulong offset = r.ReadUInt64();
                if (offset > (ulong)fs.Length) throw Corrupt(path, $"tensor {SafeText.Quote(name)} offset {offset} is past the end of the file");
                if (offset % alignment != 0) throw Corrupt(path, $"tensor {SafeText.Quote(name)} offset {offset} is not a multiple of the alignment {alignment}");
                var info = new GgufTensorInfo(name, dims, type, (long)offset);
                try { _ = checked(info.ByteSize); }
                catch (Exception e) when (e is OverflowException or ArgumentException)
                {
                    throw Corrupt(path, $"tensor {SafeText.Quote(name)} {string.Join("x", dims)} {type}: {(e is OverflowException ? "size overflows" : e.Message)}");
                }
                tensors.Add(info);
            }
            long dataStart = (fs.Position + alignment - 1) / alignment * alignment;
            foreach (var t in tensors)
                if (t.ByteSize > fs.Length || dataStart + t.Offset + t.ByteSize > fs.Length)
                    throw Corrupt(path, $"tensor {SafeText.Quote(t.Name)} ends past the end of the file ({fs.Length} bytes; truncated?)");
            return new GgufReader(path, fs, version, metadata, tensors, dataStart, alignment);
        }
        catch (EndOfStreamException)
        {
            fs.Dispose();
            throw Corrupt(path, "the header runs past the end of the file (truncated?)");
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    /// <summary>The raw bytes of one tensor as stored (f32/f16 values or quantized blocks).</summary>
    public byte[] ReadBytes(GgufTensorInfo t)
    {
        var bytes = new byte[t.ByteSize];
        _stream.Seek(DataStart + t.Offset, SeekOrigin.Begin);
        _stream.ReadExactly(bytes);
        return bytes;
    }

    static string ReadString(BinaryReader r, string path)
    {
        ulong n = r.ReadUInt64();
        if (n > (ulong)(r.BaseStream.Length - r.BaseStream.Position)) throw Corrupt(path, $"a string of {n} bytes runs past the end of the file");
        if (n > MaxStringBytes) throw Corrupt(path, $"a string of {n} bytes is longer than the {MaxStringBytes}-byte limit");
        var bytes = r.ReadBytes((int)n);
        if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw Corrupt(path, $"a string at byte {r.BaseStream.Position - (long)n} is not valid UTF-8");
        return Encoding.UTF8.GetString(bytes);
    }

    /// <summary>Keys, tensor names and vocabulary pieces are short; a longer string is corruption.</summary>
    const int MaxStringBytes = 1 << 20;

    static GgufValue ReadValue(BinaryReader r, GgufValueType type, string path, string key) => type switch
    {
        GgufValueType.UInt8 => new(type, r.ReadByte()),
        GgufValueType.Int8 => new(type, r.ReadSByte()),
        GgufValueType.UInt16 => new(type, r.ReadUInt16()),
        GgufValueType.Int16 => new(type, r.ReadInt16()),
        GgufValueType.UInt32 => new(type, r.ReadUInt32()),
        GgufValueType.Int32 => new(type, r.ReadInt32()),
        GgufValueType.Float32 => new(type, r.ReadSingle()),
        GgufValueType.Bool => new(type, r.ReadByte() != 0),
        GgufValueType.String => new(type, ReadString(r, path)),
        GgufValueType.UInt64 => new(type, r.ReadUInt64()),
        GgufValueType.Int64 => new(type, r.ReadInt64()),
        GgufValueType.Float64 => new(type, r.ReadDouble()),
        GgufValueType.Array => ReadArray(r, path, key),
        _ => throw Corrupt(path, $"key {SafeText.Quote(key)} has unknown value type {(uint)type}"),
    };

    static GgufValue ReadArray(BinaryReader r, string path, string key)
    {
        var element = (GgufValueType)r.ReadUInt32();
        ulong n = r.ReadUInt64();
        ulong minElementBytes = element switch { GgufValueType.String => 8, GgufValueType.Float32 or GgufValueType.Int32 or GgufValueType.UInt32 => 4, _ => 1 };
        if (n > (ulong)(r.BaseStream.Length - r.BaseStream.Position) / minElementBytes)
            throw Corrupt(path, $"key {SafeText.Quote(key)}: array of {n} elements runs past the end of the file");
        object items = element switch
        {
            GgufValueType.String => Enumerable.Range(0, (int)n).Select(_ => ReadString(r, path)).ToArray(),
            GgufValueType.Float32 => Enumerable.Range(0, (int)n).Select(_ => r.ReadSingle()).ToArray(),
            GgufValueType.Int32 => Enumerable.Range(0, (int)n).Select(_ => r.ReadInt32()).ToArray(),
            GgufValueType.UInt32 => Enumerable.Range(0, (int)n).Select(_ => r.ReadUInt32()).ToArray(),
            GgufValueType.UInt8 => r.ReadBytes((int)n),
            _ => throw Corrupt(path, $"key {SafeText.Quote(key)}: arrays of {element} are not supported by this reader"),
        };
        return new GgufValue(GgufValueType.Array, items, element);
    }

    static InvalidDataException Corrupt(string path, string what) => new($"{path}: not a valid GGUF file: {what}");

    public void Dispose() => _stream.Dispose();
}
