namespace QLoraNet.Quant;

/// <summary>
/// One kind of base format as the registry (<see cref="BaseFormats"/>) sees it: the names that start its spelling
/// ("nf4", "fp4"), how the rest of the spelling is read, and how the YAML config's structured keys
/// (<c>quantization: {type: nf4, double_quant: true, blocksize: 64}</c>) map onto that spelling, so both forms give
/// the same value.
/// </summary>
public abstract class BaseFormatKind
{
    /// <summary>The first token of each spelling this kind reads ("nf4", "fp4").</summary>
    public abstract IReadOnlyList<string> Names { get; }

    /// <summary>The grammar, for --help and errors: "nf4|fp4[-b&lt;N&gt;][-dq]".</summary>
    public abstract string Syntax { get; }

    /// <summary>
    /// The value of spelling <paramref name="text"/>, whose first token is <paramref name="name"/> and the rest
    /// <paramref name="options"/> (split at '-', lower case). Throws <see cref="FormatException"/> naming the
    /// spelling and what is wrong.
    /// </summary>
    public abstract BaseFormat Parse(string name, IReadOnlyList<string> options, string text);

    /// <summary>The structured YAML keys this kind reads besides <c>type</c> (e.g. double_quant, blocksize).</summary>
    public virtual IReadOnlyList<string> StructuredKeys => [];

    /// <summary>
    /// The spelling option a structured key stands for ("blocksize: 128" is "b128" for nf4, "g128" for int4;
    /// "double_quant: false" is none at all). Throws <see cref="FormatException"/> with a message that completes
    /// "'quantization.blocksize' ..." when the value is invalid.
    /// </summary>
    public virtual string? StructuredOption(string key, string value) =>
        throw new FormatException($"does not apply to {string.Join(", ", Names)}");

    /// <summary>The number after <paramref name="prefix"/> in an option token ("b128" -> 128).</summary>
    protected static int Size(string token, string prefix, string text)
    {
        if (!int.TryParse(token[prefix.Length..], out int size) || size <= 0)
            throw new FormatException($"bad size '{token}' in base format '{text}'; write e.g. {prefix}64");
        return size;
    }

    /// <summary>The problem with a block or group size that must be a power of two in [min, max], or null.</summary>
    public static string? PowerOfTwoProblem(int size, int min, int max) =>
        size >= min && size <= max && (size & (size - 1)) == 0 ? null : $"must be a power of two in [{min}, {max}]; got {size}";
}
