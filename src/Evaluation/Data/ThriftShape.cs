namespace QLoraNet.Evaluation.Data;

/// <summary>
/// The type ids of the Thrift compact protocol (apache/thrift doc/specs/thrift-compact-protocol.md, "Struct encoding"
/// and "List and Set"): the low nibble of a field header and of a list header. A boolean field carries its value in
/// its type (<see cref="True"/> or <see cref="False"/>, no bytes follow); a boolean list element is one byte.
/// 0 in a field header ends a struct; 0, 14 and 15 are no type.
/// </summary>
internal enum ThriftType : byte
{
    Stop = 0, True = 1, False = 2, I8 = 3, I16 = 4, I32 = 5, I64 = 6, Double = 7, Binary = 8, List = 9, Set = 10, Map = 11,
    Struct = 12, Uuid = 13,
}

/// <summary>One field a reader knows: the type it reads (<see cref="ThriftType.True"/> stands for a boolean), the
/// element type of a list, the shape of a struct (or of a list's struct elements).</summary>
internal sealed record ThriftField(string Name, ThriftType Type, ThriftType Element, ThriftShape? Struct);

/// <summary>
/// What a reader reads of one Thrift struct: the fields it knows, by id. A generated Thrift reader decides by the field
/// id alone how to read a value (Parquet.Net's does: its <c>switch (fieldId)</c> ignores the type on the wire), so a
/// field whose wire type differs from its shape's is read as something else, and everything after it is misread;
/// <see cref="ThriftCompactWalker"/> refuses such a field. Fields not named here are ones the reader skips.
/// </summary>
internal sealed class ThriftShape(string name)
{
    readonly Dictionary<short, ThriftField> fields = [];

    public string Name => name;

    public ThriftField? this[short id] => fields.GetValueOrDefault(id);

    /// <summary>Adds a field (a struct field with its <paramref name="shape"/>); returns this shape, to chain.</summary>
    public ThriftShape Field(short id, string fieldName, ThriftType type, ThriftShape? shape = null) =>
        Add(id, new ThriftField(fieldName, type, ThriftType.Stop, shape));

    /// <summary>Adds a list field of <paramref name="element"/> (of structs of <paramref name="shape"/>).</summary>
    public ThriftShape List(short id, string fieldName, ThriftType element, ThriftShape? shape = null) =>
        Add(id, new ThriftField(fieldName, ThriftType.List, element, shape));

    /// <summary>Ids are 1 to 63 (parquet.thrift's reach 18): the walker keeps the fields it met as bits of a ulong.</summary>
    ThriftShape Add(short id, ThriftField field)
    {
        if (id is < 1 or > 63) throw new ArgumentOutOfRangeException(nameof(id), id, "field ids of a shape are 1 to 63");
        fields.Add(id, field);
        return this;
    }

    public override string ToString() => name;
}
