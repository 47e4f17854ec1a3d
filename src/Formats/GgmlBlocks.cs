namespace QLoraNet.Formats;

/// <summary>
/// A tensor quantized to a ggml block type, exactly as its bytes go into a GGUF file: each row of
/// <see cref="Shape"/> (torch order; the last dim is the row) is a run of blocks of 32 values.
/// An immutable value: <see cref="GgufQ8_0"/> and <see cref="GgufQ4_0"/> make it and turn it back into floats.
/// </summary>
public sealed record GgmlBlocks(GgmlType Type, long[] Shape, ReadOnlyMemory<byte> Bytes)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    public long BlockCount => NumElements / GgmlTypes.BlockSize(Type);
}
