using System.Diagnostics.CodeAnalysis;

namespace QLoraNet.Evaluation.Data;

/// <summary>Receives what <see cref="ThriftCompactWalker"/> reads of the fields its shapes name.</summary>
internal interface IThriftVisitor
{
    /// <summary>An integer field (i8, i16, i32, i64 or an enum) that <paramref name="shape"/> names, or a boolean
    /// (1 or 0).</summary>
    void Integer(ThriftShape shape, short id, long value);

    /// <summary>The end of a struct of <paramref name="shape"/>; the integers reported since its start were its own
    /// or those of the structs inside it.</summary>
    void End(ThriftShape shape);
}

/// <summary>
/// Validates one Thrift compact-protocol struct in a byte array with hard bounds, trusting no count in it: every varint
/// ends within 10 bytes (5 for 32-bit values, whose value must fit), every binary length and every list, set or map
/// count is at most the bytes left (each element takes at least one byte: a boolean element is one byte), nesting
/// stops at <see cref="MaxDepth"/>, and an unknown type id is refused. It reads each byte at most once, so it costs
/// O(bytes) whatever the input claims, and it stops at the struct's end, which it returns. The format is
/// apache/thrift doc/specs/thrift-compact-protocol.md.
/// <para>
/// Without shapes it validates any well-formed struct. With a <see cref="ThriftShape"/> it also checks each known
/// field's wire type against the shape (a generated reader reads by id alone). With
/// <paramref name="readerSkipsByHeaders"/> it refuses unknown fields that Parquet.Net 6.1.0 skips wrongly: its
/// <c>ThriftCompactProtocolReader.SkipField</c> reads only the field headers of a struct (so a struct holding a
/// non-boolean field is misread), reads nothing for a boolean list element (the hang this class exists for: a count
/// of 2^31 booleans loops 2^31 times without reading), and throws on sets, maps and UUIDs.
/// </para>
/// Every failure is an <see cref="InvalidDataException"/> of one line: "<c>what</c>: what is wrong at byte N" (N counts
/// from the start of <paramref name="bytes"/>, so from the start of the file when it is the file).
/// </summary>
internal sealed class ThriftCompactWalker(byte[] bytes, int end, string what, IThriftVisitor? visitor = null, bool readerSkipsByHeaders = false)
{
    /// <summary>Structs and lists nested deeper than this are refused: Parquet's own go 8 levels deep (a list is a level).</summary>
    public const int MaxDepth = 64;

    int pos;

    /// <summary>Walks the struct that starts at <paramref name="start"/> (checking it against <paramref name="shape"/>
    /// when given) and returns the offset just after its stop field.</summary>
    public int Struct(int start, ThriftShape? shape)
    {
        if (start < 0 || start > end || end > bytes.Length) throw new ArgumentOutOfRangeException(nameof(start));
        pos = start;
        WalkStruct(shape, depth: 1, skipped: shape is null, name: shape?.Name ?? "struct");
        return pos;
    }

    void WalkStruct(ThriftShape? shape, int depth, bool skipped, string name)
    {
        Nest(depth);
        int start = pos;
        int last = 0;
        ulong seen = 0;   // the known fields met so far (ids below 64, see ThriftShape.Field)
        while (true)
        {
            int at = pos;
            byte header = Next("a field header");
            if (header == 0) break;   // the stop field
            var type = (ThriftType)(header & 0x0F);
            int delta = header >> 4;
            // "dddd is the field id delta ... the short form"; delta 0 is the long form: the field id follows as a
            // ZigZag'ed varint i16 (compact protocol, "Struct encoding").
            int id = delta != 0 ? last + delta : ZigZag32(Varint(5, "a field id"));
            if (id is < short.MinValue or > short.MaxValue) Fail($"field id {id} at byte {at} is outside the i16 range");
            last = id;
            RequireType(type, at);
            if (skipped && readerSkipsByHeaders && type is not (ThriftType.True or ThriftType.False))
                Fail($"{name} at byte {start} is a struct holding {Article(type)} field, which Parquet.Net 6.1.0 cannot skip");   // it reads the field headers only
            var field = skipped ? null : shape![(short)id];
            if (field is null)
            {
                Skip(type, depth, at, skipped ? name : $"unknown {shape!.Name} field {id}", element: false);
                continue;
            }
            // A field twice is not forbidden by the protocol, but no writer does it, and readers differ on which
            // counts (Parquet.Net takes the last): refused, so that what is checked here is what is read.
            if ((seen & (1UL << id)) != 0) Fail($"{shape!.Name}.{field.Name} (field {id}) at byte {at} appears twice");
            seen |= 1UL << id;
            Known(shape!, field, (short)id, type, depth, at);
        }
        if (!skipped) visitor?.End(shape!);
    }

    /// <summary>A field the shape names: its wire type must be the one the reader reads there.</summary>
    void Known(ThriftShape shape, ThriftField field, short id, ThriftType type, int depth, int at)
    {
        string name = $"{shape.Name}.{field.Name} (field {id})";
        if (!SameType(type, field.Type))
            Fail($"{name} at byte {at} is {Article(type)}, where Parquet has {Article(field.Type)}");
        switch (field.Type)
        {
            case ThriftType.True: visitor?.Integer(shape, id, type == ThriftType.True ? 1 : 0); return;   // the value is the type
            case ThriftType.I8: visitor?.Integer(shape, id, (sbyte)Next("an i8")); return;
            case ThriftType.I16 or ThriftType.I32: visitor?.Integer(shape, id, ZigZag32(Varint(5, "an integer"))); return;
            case ThriftType.I64: visitor?.Integer(shape, id, ZigZag64(Varint(10, "an integer"))); return;
            case ThriftType.Struct: WalkStruct(field.Struct, depth + 1, skipped: field.Struct is null, name); return;
            case ThriftType.List:
            {
                var (element, count) = ListHeader(at, depth + 1);
                if (count > 0 && !SameType(element, field.Element))
                    Fail($"{name} at byte {at} is a list of {Plural(element)}, where Parquet has a list of {Plural(field.Element)}");
                for (long i = 0; i < count; i++)
                    if (element == ThriftType.Struct) WalkStruct(field.Struct, depth + 2, skipped: field.Struct is null, name);
                    else Scalar(element, pos, element: true);
                return;
            }
            default: Scalar(field.Type, pos, element: false); return;
        }
    }

    /// <summary>A value the reader skips (a field it does not know, or anything inside one).</summary>
    void Skip(ThriftType type, int depth, int at, string name, bool element)
    {
        if (readerSkipsByHeaders && (type is ThriftType.Set or ThriftType.Map or ThriftType.Uuid
            || (element && type is ThriftType.True or ThriftType.False)))
            Fail($"{name} at byte {at} holds {Article(type)}{(element ? " list element" : "")}, which Parquet.Net 6.1.0 cannot skip");
        switch (type)
        {
            case ThriftType.Struct: WalkStruct(null, depth + 1, skipped: true, name); return;
            case ThriftType.List or ThriftType.Set:
            {
                var (elementType, count) = ListHeader(at, depth + 1);
                for (long i = 0; i < count; i++) Skip(elementType, depth + 1, pos, name, element: true);
                return;
            }
            case ThriftType.Map:
            {
                // "size varint, then kkkkvvvv when not empty" (compact protocol, "Map"); each entry takes two bytes or more.
                Nest(depth + 1);
                long count = (long)Varint(5, "a map size");
                if (count == 0) return;
                byte types = Next("a map's key and value types");
                var (key, value) = ((ThriftType)(types >> 4), (ThriftType)(types & 0x0F));
                RequireType(key, at);
                RequireType(value, at);
                if (count > (end - pos) / 2) Fail($"map of {count} entries at byte {at} exceeds the {end - pos} bytes left");
                for (long i = 0; i < count; i++)
                {
                    Skip(key, depth + 1, pos, name, element: true);
                    Skip(value, depth + 1, pos, name, element: true);
                }
                return;
            }
            default: Scalar(type, at, element); return;
        }
    }

    /// <summary>A list or set header: "sssstttt", or "1111tttt" and a varint size (compact protocol, "List and Set").</summary>
    (ThriftType Element, long Count) ListHeader(int at, int depth)
    {
        Nest(depth);
        byte header = Next("a list header");
        var element = (ThriftType)(header & 0x0F);
        long count = header >> 4;
        if (count == 15) count = (long)Varint(5, "a list size");
        if (count > 0) RequireType(element, at);   // an empty list's element type is not read (some writers put 0)
        if (count > end - pos) Fail($"list of {count} elements at byte {at} exceeds the {end - pos} bytes left");
        return (element, count);
    }

    /// <summary>A value of fixed shape: booleans (a byte as a list element, nothing as a field), integers, doubles,
    /// binaries (a varint length, then that many bytes), UUIDs (16 bytes).</summary>
    void Scalar(ThriftType type, int at, bool element)
    {
        switch (type)
        {
            case ThriftType.True or ThriftType.False: if (element) Next("a boolean"); return;
            case ThriftType.I8: Next("an i8"); return;
            case ThriftType.I16 or ThriftType.I32: Varint(5, "an integer"); return;
            case ThriftType.I64: Varint(10, "an integer"); return;
            case ThriftType.Double: Take(8, "a double", at); return;
            case ThriftType.Uuid: Take(16, "a UUID", at); return;
            case ThriftType.Binary:
            {
                long length = (long)Varint(5, "a binary length");
                if (length > end - pos) Fail($"binary of {length} bytes at byte {at} exceeds the {end - pos} bytes left");
                pos += (int)length;
                return;
            }
            default: throw new InvalidOperationException($"not a scalar type: {type}");
        }
    }

    /// <summary>An unsigned LEB128 varint of at most <paramref name="maxBytes"/> bytes (5 for a 32-bit value, 10
    /// for a 64-bit one) whose value fits in 32 or 64 bits (compact protocol, "Varint encoding").</summary>
    ulong Varint(int maxBytes, string thing)
    {
        int at = pos;
        ulong value = 0;
        for (int i = 0; i < maxBytes; i++)
        {
            byte b = Next(thing);
            value |= (ulong)(b & 0x7F) << (7 * i);
            if ((b & 0x80) != 0) continue;
            if (i == maxBytes - 1 && b > (maxBytes == 5 ? 0x0F : 0x01))
                Fail($"varint at byte {at} is larger than {(maxBytes == 5 ? 32 : 64)} bits");
            return value;
        }
        return Fail<ulong>($"varint at byte {at} is longer than {maxBytes} bytes");
    }

    static int ZigZag32(ulong n) => (int)((uint)n >> 1) ^ -(int)((uint)n & 1);

    static long ZigZag64(ulong n) => (long)(n >> 1) ^ -(long)(n & 1);

    byte Next(string thing)
    {
        if (pos >= end) Fail($"{thing} at byte {pos} runs past the end (byte {end})");
        return bytes[pos++];
    }

    void Take(int count, string thing, int at)
    {
        if (count > end - pos) Fail($"{thing} at byte {at} runs past the end (byte {end})");
        pos += count;
    }

    void Nest(int depth)
    {
        if (depth > MaxDepth) Fail($"values nested deeper than {MaxDepth} at byte {pos}");
    }

    void RequireType(ThriftType type, int at)
    {
        if (type is ThriftType.Stop or > ThriftType.Uuid) Fail($"unknown type id {(int)type} at byte {at}");
    }

    /// <summary>Booleans have two type ids, true and false (and 1 or 2 as a list's element type).</summary>
    static bool SameType(ThriftType wire, ThriftType expected) =>
        wire == expected || (wire is ThriftType.True or ThriftType.False && expected is ThriftType.True or ThriftType.False);

    static string Article(ThriftType type) => type switch
    {
        ThriftType.True or ThriftType.False => "a boolean",
        ThriftType.I8 => "an i8",
        ThriftType.I16 => "an i16",
        ThriftType.I32 => "an i32",
        ThriftType.I64 => "an i64",
        ThriftType.Uuid => "a UUID",
        _ => "a " + type.ToString().ToLowerInvariant(),
    };

    static string Plural(ThriftType type) => type switch
    {
        ThriftType.True or ThriftType.False => "booleans",
        ThriftType.Uuid => "UUIDs",
        _ => type.ToString().ToLowerInvariant() + "s",
    };

    [DoesNotReturn]
    void Fail(string message) => throw new InvalidDataException($"{what}: {message}");

    [DoesNotReturn]
    T Fail<T>(string message) => throw new InvalidDataException($"{what}: {message}");
}
