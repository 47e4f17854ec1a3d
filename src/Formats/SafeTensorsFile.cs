using System.Buffers.Binary;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// Reader for one .safetensors file (format: huggingface/safetensors README): an 8-byte little-endian header
/// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then
/// the data section. Everything in the header is validated against the file before any tensor is read, so a
/// truncated or corrupt file fails at Open with a message naming the file and the entry. Only regular files are
/// opened (a FIFO would block). Tensors are read one at a time into new CPU tensors: peak memory stays near one
/// tensor; float tensors holding NaN or Inf are refused by name unless the caller opts out.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Headers above this are refused (the reference implementation's limit is 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    readonly FileStream _stream;
    readonly long _dataStart;
    readonly Dictionary<string, TensorInfo> _byName;

    public string Path { get; }
    public IReadOnlyList<TensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IEnumerable<string> Names => Tensors.Select(t => t.Name);

    SafeTensorsFile(string path, FileStream stream, long dataStart, List<TensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
        _byName = tensors.ToDictionary(t => t.Name);
    }

    /// <summary>
    /// Opens and validates <paramref name="path"/>. Float tensors are checked for NaN/Inf as they are read unless
    /// <paramref name="allowNonFinite"/> (for users who must load such a file, e.g. to inspect a diverged run).
    /// </summary>
    public static SafeTensorsFile Open(string path, bool allowNonFinite = false)
    {
        var stream = UserFile.OpenRead(path, "safetensors file", 1 << 20);
        try
        {
            var file = Parse(path, stream);
            file.AllowNonFinite = allowNonFinite;
            return file;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>When false (the default), <see cref="Read"/> refuses a float tensor holding NaN or Inf.</summary>
    public bool AllowNonFinite { get; private set; }

    /// <summary>
    /// Validates as strictly as the reference implementation (huggingface/safetensors src/tensor.rs, read_metadata
    /// and Metadata::validate), plus what it leaves to luck: the header is valid UTF-8 JSON, an object, padded only
    /// with spaces, with no duplicate names; sorted by offset, the tensors start at 0, follow one another with no
    /// gap or overlap, each holds exactly dtype size x shape bytes (checked arithmetic), and the last one ends
    /// exactly at the end of the file. A header length that is off by a few bytes (into its padding, or short)
    /// therefore fails here instead of shifting every tensor.
    /// </summary>
    static SafeTensorsFile Parse(string path, FileStream stream)
    {
        long fileLength = stream.Length;
        if (fileLength < 8) throw Corrupt(path, $"file is {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> lenBytes = stackalloc byte[8];
        stream.ReadExactly(lenBytes);
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLen > MaxHeaderBytes) throw Corrupt(path, $"header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)headerLen > fileLength - 8) throw Corrupt(path, $"header length {headerLen} runs past the end of the file ({fileLength} bytes; truncated?)");
        if (headerLen < 2) throw Corrupt(path, $"header length {headerLen} is too short for a JSON object");
        var headerBytes = new byte[headerLen];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLen;
        long dataLength = fileLength - dataStart;

        if (!System.Text.Unicode.Utf8.IsValid(headerBytes)) throw Corrupt(path, "header is not valid UTF-8");
        if (headerBytes[0] != (byte)'{') throw Corrupt(path, $"header does not start with '{{' (byte 0x{headerBytes[0]:x2}; wrong header length?)");
        // The writer pads the JSON with spaces to a multiple of 8 bytes; anything else after the closing brace
        // means the header length is wrong or the file was altered.
        int jsonEnd = headerBytes.Length;
        while (jsonEnd > 0 && headerBytes[jsonEnd - 1] == (byte)' ') jsonEnd--;
        if (jsonEnd == 0 || headerBytes[jsonEnd - 1] != (byte)'}')
            throw Corrupt(path, "header does not end with '}' followed only by space padding (wrong header length?)");

        JsonDocument doc;
        try { doc = JsonDocument.Parse(headerBytes.AsMemory(0, jsonEnd), UserFile.JsonOptions); }
        catch (JsonException e) { throw Corrupt(path, $"header is not valid JSON ({SafeText.Clip(e.Message.Split(". ")[0], 120)})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Corrupt(path, "header is not a JSON object");

        var tensors = new List<TensorInfo>();
        var metadata = new Dictionary<string, string>();
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (prop.Value.ValueKind != JsonValueKind.Object)
                    throw Corrupt(path, "__metadata__ must be an object of strings");
                foreach (var m in prop.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()!
                        : throw Corrupt(path, $"__metadata__ value {SafeText.Quote(m.Name)} is not a string");
                continue;
            }
            tensors.Add(ParseEntry(path, prop));
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!seen.Add(t.Name)) throw Corrupt(path, $"tensor {SafeText.Quote(t.Name)} appears twice in the header");
        // Data order in the file is the order of the offsets, which is how a streaming reader should visit them.
        tensors.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expectedBegin = 0;
        foreach (var t in tensors)
        {
            if (t.Begin != expectedBegin)
                throw Corrupt(path, t.Begin < expectedBegin
                    ? $"tensor {SafeText.Quote(t.Name)} data_offsets [{t.Begin}, {t.End}] overlap the previous tensor, which ends at {expectedBegin}"
                    : $"tensor {SafeText.Quote(t.Name)} data_offsets [{t.Begin}, {t.End}] leave a gap after byte {expectedBegin}");
            expectedBegin = t.End;
        }
        if (expectedBegin != dataLength)
            throw Corrupt(path, expectedBegin > dataLength
                ? $"the tensors need {expectedBegin} data bytes but the file holds {dataLength} after the header (truncated, or wrong header length?)"
                : $"the tensors cover {expectedBegin} data bytes but the file holds {dataLength} after the header (wrong header length, or trailing bytes?)");
        return new SafeTensorsFile(path, stream, dataStart, tensors, metadata);
    }

    static TensorInfo ParseEntry(string path, JsonProperty prop)
    {
        string name = SafeText.Quote(prop.Name);
        var e = prop.Value;
        if (e.ValueKind != JsonValueKind.Object
            || !e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
            || !e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
            || !e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Corrupt(path, $"entry {name} needs dtype, shape and data_offsets [begin, end]");
        string dtypeName = dt.GetString()!;
        if (!SafeTensorsDType.TryParse(dtypeName, out var dtype))
            throw Corrupt(path, $"entry {name} has dtype {SafeText.Quote(dtypeName, 20)}, not one of {string.Join(", ", SafeTensorsDType.Supported)}");
        if (sh.GetArrayLength() > MaxRank) throw Corrupt(path, $"entry {name} has {sh.GetArrayLength()} dimensions (at most {MaxRank})");
        var shape = new List<long>();
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw Corrupt(path, $"entry {name} has an invalid shape {SafeText.Clip(sh.GetRawText(), 80)}");
            shape.Add(v);
        }
        if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Corrupt(path, $"entry {name} has invalid data_offsets {SafeText.Clip(off.GetRawText(), 80)}");
        long expected = SafeTensorsDType.ElementSize(dtype);
        foreach (var d in shape)
            if (d != 0 && expected > long.MaxValue / d)
                throw Corrupt(path, $"entry {name}: dtype {dtypeName} x shape [{string.Join(", ", shape)}] overflows a 64-bit byte count");
            else expected *= d;
        if (end - begin != expected)
            throw Corrupt(path, $"entry {name} holds {end - begin} bytes but dtype {dtypeName} x shape [{string.Join(", ", shape)}] needs {expected}");
        return new TensorInfo(prop.Name, dtype, shape.ToArray(), begin, end, path);
    }

    /// <summary>More dimensions than any tensor of a model has; a header with more is not a real one.</summary>
    public const int MaxRank = 8;

    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var i) ? i : throw new KeyNotFoundException($"{Path}: no tensor named {SafeText.Quote(name)}");

    /// <summary>Reads a tensor into a new contiguous CPU tensor of its stored dtype. The caller owns it.</summary>
    public Tensor Read(string name)
    {
        var info = Info(name);
        var t = torch.empty(info.Shape, info.DType);
        try
        {
            lock (_stream)
            {
                _stream.Position = _dataStart + info.Begin;
                NativeTensorMemory.ForEachChunk(t, chunk => _stream.ReadExactly(chunk));
            }
            if (!AllowNonFinite) FiniteCheck.Require(t, () => $"{Path}: tensor {SafeText.Quote(name)}");
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    public void Dispose() => _stream.Dispose();

    static InvalidDataException Corrupt(string path, string what) => new($"{path}: corrupt safetensors file: {what}");
}
