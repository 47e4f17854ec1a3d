using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// Reader for one .safetensors file (format: huggingface/safetensors README): an 8-byte little-endian header
/// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then
/// the data section. Everything in the header is validated against the file before any tensor is read, so a
/// truncated or corrupt file fails at Open with a message naming the file and the entry.
/// Tensors are read one at a time into new CPU tensors: peak memory stays near one tensor.
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

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found", path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        try
        {
            return Parse(path, stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    static SafeTensorsFile Parse(string path, FileStream stream)
    {
        long fileLength = stream.Length;
        if (fileLength < 8) throw Corrupt(path, $"file is {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> lenBytes = stackalloc byte[8];
        stream.ReadExactly(lenBytes);
        ulong headerLen = BitConverter.ToUInt64(lenBytes);
        if (headerLen > MaxHeaderBytes) throw Corrupt(path, $"header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)headerLen > fileLength - 8) throw Corrupt(path, $"header length {headerLen} runs past the end of the file ({fileLength} bytes; truncated?)");
        var headerBytes = new byte[headerLen];
        stream.ReadExactly(headerBytes);
        long dataStart = 8 + (long)headerLen;
        long dataLength = fileLength - dataStart;

        JsonDocument doc;
        try { doc = JsonDocument.Parse(headerBytes); }
        catch (JsonException e) { throw Corrupt(path, $"header is not valid JSON ({e.Message.Split('.')[0]})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Corrupt(path, "header is not a JSON object");

        var tensors = new List<TensorInfo>();
        var metadata = new Dictionary<string, string>();
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (prop.Value.ValueKind == JsonValueKind.Object)
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                continue;
            }
            tensors.Add(ParseEntry(path, prop, dataLength));
        }
        // Data order in the file is the order of the offsets, which is how a streaming reader should visit them.
        tensors.Sort((a, b) => a.Begin.CompareTo(b.Begin));
        return new SafeTensorsFile(path, stream, dataStart, tensors, metadata);
    }

    static TensorInfo ParseEntry(string path, JsonProperty prop, long dataLength)
    {
        string name = prop.Name;
        var e = prop.Value;
        if (e.ValueKind != JsonValueKind.Object
            || !e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
            || !e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
            || !e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw Corrupt(path, $"entry '{name}' needs dtype, shape and data_offsets [begin, end]");
        string dtypeName = dt.GetString()!;
        if (!SafeTensorsDType.TryParse(dtypeName, out var dtype))
            throw Corrupt(path, $"entry '{name}' has dtype '{dtypeName}', not one of {string.Join(", ", SafeTensorsDType.Supported)}");
        var shape = new List<long>();
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw Corrupt(path, $"entry '{name}' has an invalid shape {sh.GetRawText()}");
            shape.Add(v);
        }
        if (!off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw Corrupt(path, $"entry '{name}' has invalid data_offsets {off.GetRawText()}");
        if (end > dataLength)
            throw Corrupt(path, $"entry '{name}' data_offsets [{begin}, {end}] run past the data section ({dataLength} bytes; truncated?)");
        long numel = 1;
        foreach (var d in shape) numel = checked(numel * d);
        long expected = numel * SafeTensorsDType.ElementSize(dtype);
        if (end - begin != expected)
            throw Corrupt(path, $"entry '{name}' holds {end - begin} bytes but dtype {dtypeName} x shape [{string.Join(", ", shape)}] needs {expected}");
        return new TensorInfo(name, dtype, shape.ToArray(), begin, end, path);
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public TensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var i) ? i : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

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
