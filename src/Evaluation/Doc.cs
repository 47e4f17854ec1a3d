namespace QLoraNet.Evaluation;

/// <summary>
/// One row of a task's data ("doc" in lm-evaluation-harness): field name to value, where values are
/// <see cref="string"/>, <see cref="long"/>, <see cref="double"/>, <see cref="bool"/>, null, lists
/// (<see cref="IReadOnlyList{T}"/> of values) and mappings (<see cref="IReadOnlyDictionary{TKey,TValue}"/>), as the
/// hub's datasets hold them (ARC's <c>choices</c> is a mapping of two lists). <see cref="Origin"/> names the row in
/// errors: <c>data/test.jsonl:12</c>, <c>test-00000-of-00001.parquet row 5</c>.
/// </summary>
public sealed record Doc(IReadOnlyDictionary<string, object?> Fields, string Origin)
{
    public object? this[string field] => Fields[field];

    /// <summary>A copy with more (or replaced) fields, as a preprocessor's <c>dataset.map</c> gives.</summary>
    public Doc With(IEnumerable<KeyValuePair<string, object?>> fields)
    {
        var merged = new Dictionary<string, object?>(Fields);
        foreach (var (k, v) in fields) merged[k] = v;
        return this with { Fields = merged };
    }
}
