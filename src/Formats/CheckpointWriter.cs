using System.Text.Json;
using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// Writes a Hugging Face style sharded checkpoint into a directory: <c>model-0000i-of-0000n.safetensors</c> files
/// of at most <c>maxShardBytes</c> each plus <c>model.safetensors.index.json</c> (or a single
/// <c>model.safetensors</c> when everything fits in one shard). Tensors are produced on demand, one at a time.
/// </summary>
public static class CheckpointWriter
{
    public const long DefaultMaxShardBytes = 5L * 1024 * 1024 * 1024; // transformers' save_pretrained default (5 GB)

    public static IReadOnlyList<string> Write(string dir, IReadOnlyList<SafeTensors.Entry> layout, Func<string, Tensor> produce,
        long maxShardBytes = DefaultMaxShardBytes, IReadOnlyDictionary<string, string>? metadata = null)
    {
        System.IO.Directory.CreateDirectory(dir);
        var shards = new List<List<SafeTensors.Entry>> { new() };
        long current = 0, total = 0;
        foreach (var e in layout)
        {
            long bytes = e.Shape.Aggregate(1L, (a, b) => a * b) * SafeTensorsDType.ElementSize(e.DType);
            if (current > 0 && current + bytes > maxShardBytes)
            {
                shards.Add(new());
                current = 0;
            }
            shards[^1].Add(e);
            current += bytes;
            total += bytes;
        }
        var files = new List<string>();
        if (shards.Count == 1)
        {
            SafeTensors.WriteStreaming(Path.Combine(dir, CheckpointReader.SingleFile), shards[0], produce, metadata);
            files.Add(CheckpointReader.SingleFile);
            return files;
        }
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < shards.Count; i++)
        {
            string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafeTensors.WriteStreaming(Path.Combine(dir, file), shards[i], produce, metadata);
            foreach (var e in shards[i]) weightMap[e.Name] = file;
            files.Add(file);
        }
        var index = new { metadata = new { total_size = total }, weight_map = weightMap };
        File.WriteAllText(Path.Combine(dir, CheckpointReader.IndexFile),
            JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }));
        return files;
    }
}
