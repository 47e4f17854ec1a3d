namespace QLoraNet.Formats;

/// <summary>
/// The ggml tensor types QLoraNet writes into GGUF files, with their numeric ids from <c>enum ggml_type</c>
/// (ggml.h; gguf-py <c>GGMLQuantizationType</c>). A quantized type stores each row in blocks of
/// <see cref="GgmlTypes.BlockSize"/> values taking <see cref="GgmlTypes.BlockBytes"/> bytes.
/// </summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q8_0 = 8,
}

public static class GgmlTypes
{
    /// <summary>Values per block: 1 for float types, 32 for Q4_0/Q8_0 (QK4_0, QK8_0 in ggml-common.h).</summary>
    public static int BlockSize(GgmlType t) => t switch
    {
        GgmlType.F32 or GgmlType.F16 => 1,
        GgmlType.Q4_0 or GgmlType.Q8_0 => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown ggml type"),
    };

    /// <summary>Bytes per block: block_q4_0 = fp16 d + 16 packed bytes; block_q8_0 = fp16 d + 32 int8.</summary>
    public static int BlockBytes(GgmlType t) => t switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 => 2,
        GgmlType.Q4_0 => 2 + 16,
        GgmlType.Q8_0 => 2 + 32,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown ggml type"),
    };

    /// <summary>Bytes of a tensor of this type; <paramref name="shape"/> in torch order, so the last dim is the row.</summary>
    public static long ByteSize(GgmlType t, IReadOnlyList<long> shape)
    {
        long rowLength = shape.Count == 0 ? 1 : shape[^1];
        long rows = 1;
        for (int i = 0; i < shape.Count - 1; i++) rows *= shape[i];
        if (rowLength % BlockSize(t) != 0)
            throw new ArgumentException($"a {t} row needs a multiple of {BlockSize(t)} values, not {rowLength}");
        return rows * (rowLength / BlockSize(t)) * BlockBytes(t);
    }

    /// <summary>The name llama.cpp prints for the type (ggml_type_name).</summary>
    public static string Name(GgmlType t) => t.ToString().ToLowerInvariant();
}
