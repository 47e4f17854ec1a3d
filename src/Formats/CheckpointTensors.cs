using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>
/// One tensor of a checkpoint, not yet read: its Hugging Face name, its shape, and a function that reads it
/// (the caller owns and disposes what <see cref="Produce"/> returns). Writers that stream (GGUF, safetensors) take
/// a sequence of these so that only one tensor is in memory at a time.
/// </summary>
public sealed record SourceTensor(string Name, long[] Shape, Func<Tensor> Produce);

public static class CheckpointTensors
{
    /// <summary>
    /// The tensors of <paramref name="reader"/> in file order. <paramref name="transform"/> maps
    /// (hfName, dense weight) to the weight to write instead and must keep its shape: the hook through which a
    /// LoRA merge folds scaling·B·A into each base weight as it streams past. It receives every tensor
    /// (norms and embeddings too) and returns its input unchanged for those it does not touch.
    /// </summary>
    public static IEnumerable<SourceTensor> Stream(CheckpointReader reader, Func<string, Tensor, Tensor>? transform = null)
    {
        foreach (var name in reader.Names)
        {
            var info = reader.Info(name);
            yield return new SourceTensor(name, info.Shape, () => Read(reader, name, info.Shape, transform));
        }
    }

    static Tensor Read(CheckpointReader reader, string name, long[] shape, Func<string, Tensor, Tensor>? transform)
    {
        var dense = reader.Read(name);
        if (transform is null) return dense;
        Tensor result;
        try
        {
            result = transform(name, dense);
        }
        catch
        {
            dense.Dispose();
            throw;
        }
        if (!ReferenceEquals(result, dense)) dense.Dispose();
        if (!result.shape.SequenceEqual(shape))
        {
            string got = string.Join(", ", result.shape);
            result.Dispose();
            throw new InvalidOperationException($"tensor '{name}': the transform changed its shape from [{string.Join(", ", shape)}] to [{got}]");
        }
        return result;
    }
}
