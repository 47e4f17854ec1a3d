using System.Text.Json;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// A Hugging Face checkpoint directory: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c> ({"metadata": {...}, "weight_map": {tensor name: shard file}}).
/// Every shard's header is validated at Open; tensors are then read one at a time, in file order.
/// </summary>
public sealed class CheckpointReader : IDisposable
{
    public const string IndexFile = "model.safetensors.index.json";
    public const string SingleFile = "model.safetensors";

    readonly List<SafeTensorsFile> _shards;
    readonly Dictionary<string, SafeTensorsFile> _owner = new();

    public string Directory { get; }
    /// <summary>Tensor names in file order, shard by shard: the streaming order.</summary>
    public IReadOnlyList<string> Names { get; }
    public IReadOnlyList<string> ShardPaths => _shards.Select(s => s.Path).ToList();

    CheckpointReader(string dir, List<SafeTensorsFile> shards)
    {
        Directory = dir;
        _shards = shards;
        var names = new List<string>();
        foreach (var s in shards)
            foreach (var t in s.Tensors)
            {
                if (!_owner.TryAdd(t.Name, s))
                    throw new InvalidDataException($"{s.Path}: tensor {SafeText.Quote(t.Name)} also appears in {_owner[t.Name].Path}");
                names.Add(t.Name);
            }
        Names = names;
    }

    /// <summary>Opens and validates every shard; <paramref name="allowNonFinite"/>: see <see cref="SafeTensorsFile.Open"/>.</summary>
    public static CheckpointReader Open(string dir, bool allowNonFinite = false)
    {
        if (!System.IO.Directory.Exists(dir)) throw new DirectoryNotFoundException($"model directory '{dir}' does not exist");
        string index = Path.Combine(dir, IndexFile);
        string single = Path.Combine(dir, SingleFile);
        var shards = new List<SafeTensorsFile>();
        try
        {
            if (File.Exists(index))
            {
                var weightMap = ReadIndex(index);
                foreach (var file in weightMap.Values.Distinct().OrderBy(f => f, StringComparer.Ordinal))
                {
                    string p = Path.Combine(dir, file);
                    if (!File.Exists(p)) throw new FileNotFoundException($"{index}: shard {SafeText.Quote(file)} is listed but missing from {dir}", p);
                    shards.Add(SafeTensorsFile.Open(p, allowNonFinite));
                }
                var reader = new CheckpointReader(dir, shards);
                foreach (var (name, file) in weightMap)
                    if (!reader._owner.TryGetValue(name, out var s) || Path.GetFileName(s.Path) != file)
                        throw new InvalidDataException($"{index}: tensor {SafeText.Quote(name)} is mapped to {SafeText.Quote(file)} but that shard does not hold it");
                return reader;
            }
            if (File.Exists(single))
            {
                shards.Add(SafeTensorsFile.Open(single, allowNonFinite));
                return new CheckpointReader(dir, shards);
            }
            var other = System.IO.Directory.GetFiles(dir, "*.safetensors");
            if (other.Length == 1)
            {
                shards.Add(SafeTensorsFile.Open(other[0], allowNonFinite));
                return new CheckpointReader(dir, shards);
            }
            throw new FileNotFoundException($"{dir}: no {SingleFile} or {IndexFile} (is this a Hugging Face model directory with safetensors weights?)");
        }
        catch
        {
            foreach (var s in shards) s.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The index's weight_map. Shard names must be plain file names (no folders, no "..": the index cannot point
    /// outside the model directory), and the index is read with <see cref="UserFile"/>'s limits.
    /// </summary>
    static Dictionary<string, string> ReadIndex(string path)
    {
        using var doc = UserFile.ReadJson(path, what: "checkpoint index");
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: missing the \"weight_map\" object");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in map.EnumerateObject())
        {
            string? file = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() : null;
            if (string.IsNullOrEmpty(file) || file != Path.GetFileName(file) || file is "." or ".." || file.Contains('\\') || file.Contains('\0'))
                throw new InvalidDataException($"{path}: weight_map entry {SafeText.Quote(p.Name)} must name a shard file in the model directory, got {SafeText.Clip(p.Value.GetRawText(), 80)}");
            result[p.Name] = file;
        }
        return result;
    }

    public bool Contains(string name) => _owner.ContainsKey(name);

    public TensorInfo Info(string name) => Owner(name).Info(name);

    /// <summary>Reads one tensor into a new CPU tensor of its stored dtype. The caller owns (and disposes) it.</summary>
    public Tensor Read(string name) => Owner(name).Read(name);

    SafeTensorsFile Owner(string name) =>
        _owner.TryGetValue(name, out var s) ? s : throw new KeyNotFoundException($"{Directory}: checkpoint has no tensor {SafeText.Quote(name)}");

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }
}
