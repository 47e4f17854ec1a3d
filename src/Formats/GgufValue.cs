namespace QLoraNet.Formats;

/// <summary>Metadata value types of GGUF (gguf.md "gguf_metadata_value_type"; <c>enum gguf_type</c> in gguf.h).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>
/// One typed GGUF metadata value. The type is part of the value because llama.cpp checks it when reading a key
/// (e.g. <c>llama.context_length</c> must be UINT32): a key written as INT32 instead is refused at load time.
/// Arrays hold one element type (<see cref="ElementType"/>); <see cref="Value"/> is then an <c>IReadOnlyList</c>.
/// </summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    public static GgufValue UInt32(uint v) => new(GgufValueType.UInt32, v);
    public static GgufValue Int32(int v) => new(GgufValueType.Int32, v);
    public static GgufValue UInt64(ulong v) => new(GgufValueType.UInt64, v);
    public static GgufValue Float32(float v) => new(GgufValueType.Float32, v);
    public static GgufValue Bool(bool v) => new(GgufValueType.Bool, v);
    public static GgufValue String(string v) => new(GgufValueType.String, v);
    public static GgufValue StringArray(IReadOnlyList<string> v) => new(GgufValueType.Array, v, GgufValueType.String);
    public static GgufValue Float32Array(IReadOnlyList<float> v) => new(GgufValueType.Array, v, GgufValueType.Float32);
    public static GgufValue Int32Array(IReadOnlyList<int> v) => new(GgufValueType.Array, v, GgufValueType.Int32);

    public uint AsUInt32 => Type == GgufValueType.UInt32 ? (uint)Value : throw WrongType("UINT32");
    public float AsFloat32 => Type == GgufValueType.Float32 ? (float)Value : throw WrongType("FLOAT32");
    public bool AsBool => Type == GgufValueType.Bool ? (bool)Value : throw WrongType("BOOL");
    public string AsString => Type == GgufValueType.String ? (string)Value : throw WrongType("STRING");
    public IReadOnlyList<T> AsArray<T>() => Value as IReadOnlyList<T> ?? throw WrongType($"ARRAY of {typeof(T).Name}");

    InvalidCastException WrongType(string wanted) => new($"GGUF value is {Type}{(Type == GgufValueType.Array ? $" of {ElementType}" : "")}, not {wanted}");

    public override string ToString() => Type == GgufValueType.Array
        ? $"[{ElementType} x {((System.Collections.ICollection)Value).Count}]"
        : $"{Value}";
}
