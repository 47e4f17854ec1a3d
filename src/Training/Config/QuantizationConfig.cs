using QLoraNet.Quant;
using YamlDotNet.RepresentationModel;

namespace QLoraNet.Training.Config;

/// <summary>
/// How the frozen base linears are stored (<see cref="Format"/>, one <see cref="BaseFormat"/> with the spelling the
/// CLI uses) and the compute dtype. Two YAML forms give the same value:
/// <code>
///   quantization: nf4-dq                                                  # a spelling (see --help)
///   quantization: {type: nf4, double_quant: true, blocksize: 64, compute_dtype: bf16}
/// </code>
/// In the structured form, <c>type</c> is a kind (nf4, int4, none, ...) or a whole spelling, and each other key adds
/// the option it stands for (<c>blocksize: 128</c> is -b128 for nf4/fp4, -g128 for int8/int4); a key left out keeps
/// the spelling's own default, so <c>{type: int4}</c> is <c>int4</c> (per channel) exactly as on the command line.
/// With no type at all the default is QLoRA's (Dettmers et al. 2023): nf4 with double quantization, blocks of 64.
/// </summary>
/// <param name="Aware">quantization-aware training (<c>aware: ternary</c>): the forward sees the decoder linears, LoRA
/// updates included, as this format will compute them (straight-through gradients), so that merging into it keeps
/// what training learned; the base itself stays dense (type none, bf16, fp16 or fp32; none when type is left out).</param>
public sealed record QuantizationConfig(BaseFormat Format, DType ComputeDtype = DType.Bf16, BaseFormat? Aware = null)
{
    public static QuantizationConfig Default { get; } = new(BaseFormat.Parse("nf4-dq"));

    const string TypeKey = "type", ComputeKey = "compute_dtype", AwareKey = "aware";

    internal static QuantizationConfig Bind(ConfigSection parent, string key)
    {
        var (scalar, s) = parent.ScalarOrSection(key, "a base format such as nf4-dq, or a mapping of keys (type, double_quant, blocksize, compute_dtype, aware)");
        if (scalar != null) return new QuantizationConfig(Parse(scalar, problem => s.Error($"'{s.Path}': {problem}")));

        string? awareText = s.OptionalString(AwareKey);
        string? type = s.OptionalString(TypeKey) ?? (awareText is null ? null : "none");   // aware trains a dense base
        var options = new List<string>();
        var split = BaseFormats.Split(type ?? "nf4");
        var kindName = split?.Name ?? (type ?? "nf4").Trim().ToLowerInvariant().Split('-')[0];
        var kind = split?.Kind;
        foreach (var optionKey in BaseFormats.Kinds.SelectMany(k => k.StructuredKeys).Distinct())
        {
            string? value = s.OptionalString(optionKey);
            if (value is null || kind is null) continue;
            var owners = BaseFormats.Kinds.Where(k => k.StructuredKeys.Contains(optionKey)).ToList();
            if (!kind.StructuredKeys.Contains(optionKey))
            {
                if (StatesADefault(owners, optionKey, value)) continue;   // double_quant: false or blocksize: 64 under none
                throw s.ErrorAt(optionKey, $"'{s.Full(optionKey)}' applies to {string.Join(", ", owners.SelectMany(k => k.Names))} only; remove it for {kindName}");
            }
            string? option;
            try { option = kind.StructuredOption(optionKey, value); }
            // The format's message echoes the value as read: shown escaped, like every value a config error quotes.
            catch (FormatException e) { throw s.ErrorAt(optionKey, $"'{s.Full(optionKey)}' {QLoraNet.Formats.SafeText.Clip(e.Message, 300)}"); }
            if (option is null) continue;
            if (type is not null && split is { Options.Length: > 0 })
                throw s.ErrorAt(optionKey, $"'{s.Full(TypeKey)}' is a whole spelling ({type}); give the options in it or as keys, not both");
            options.Add(option);
        }
        if (type is null && s.OptionalString("double_quant") is null) options.Add("dq");   // QLoRA's default
        var compute = s.Enum(ComputeKey, DType.Bf16);
        s.Finish();
        if (kind is null)
            throw s.ErrorAt(TypeKey, $"'{s.Full(TypeKey)}' must be one of {string.Join(", ", BaseFormats.Names)} (or a whole spelling such as nf4-dq); got {QLoraNet.Formats.SafeText.Quote(type)}");
        string spelling = string.Join('-', options.Prepend((type ?? kindName).Trim()));
        var format = Parse(spelling, problem => s.ErrorAt(TypeKey, $"'{s.Full(TypeKey)}': {problem}"));
        return new QuantizationConfig(format, compute, awareText is null ? null : AwareTarget(awareText, format, s));
    }

    /// <summary>The target of quantization-aware training: a format with a fake quantizer, over a dense base.</summary>
    static BaseFormat AwareTarget(string text, BaseFormat format, ConfigSection s)
    {
        string choices = string.Join(", ", BaseFormats.AwareNames);
        var aware = Parse(text, problem => s.ErrorAt(AwareKey, $"'{s.Full(AwareKey)}': {problem}"));
        if (aware.FakeQuantization is null)
            throw s.ErrorAt(AwareKey, $"'{s.Full(AwareKey)}' must be a format quantization-aware training can target ({choices}); got {QLoraNet.Formats.SafeText.Quote(text)}");
        if (format is not DenseFormat)
            throw s.ErrorAt(AwareKey, $"'{s.Full(AwareKey)}' trains a dense base toward {aware}: set '{s.Full(TypeKey)}' to none, bf16, fp16 or fp32 (got {format})");
        return aware;
    }

    /// <summary>
    /// True when the key's value is a default of some kind that reads it (double_quant: false, blocksize: 64), so a
    /// config that switches type (quantization.type=none on the command line) keeps working; a value that would
    /// change a format (double_quant: true) under a kind that cannot have it is an error.
    /// </summary>
    static bool StatesADefault(IEnumerable<BaseFormatKind> owners, string key, string value) =>
        owners.Any(k =>
        {
            try { return k.StructuredOption(key, value) is null; }
            catch (FormatException) { return false; }
        });

    static BaseFormat Parse(string spelling, Func<string, ConfigException> error)
    {
        try { return BaseFormat.Parse(spelling); }
        // The format's message echoes the spelling as read: shown escaped and clipped, like every value a config error quotes.
        catch (FormatException e) { throw error(QLoraNet.Formats.SafeText.Clip(e.Message, 300)); }
    }

    internal YamlMappingNode ToYaml() => Aware is null
        ? YamlOut.Map((TypeKey, YamlOut.Scalar(Format.ToString())), (ComputeKey, YamlOut.Scalar(ComputeDtype)))
        : YamlOut.Map((TypeKey, YamlOut.Scalar(Format.ToString())), (ComputeKey, YamlOut.Scalar(ComputeDtype)), (AwareKey, YamlOut.Scalar(Aware.ToString())));
}
