using static TorchSharp.torch;

namespace QLoraNet.Formats;

/// <summary>One tensor's entry in a safetensors header: where its bytes are (relative to the data section).</summary>
public sealed record TensorInfo(string Name, ScalarType DType, long[] Shape, long Begin, long End, string ShardPath)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}
