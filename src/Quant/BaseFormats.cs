using System.Text.Json.Nodes;

namespace QLoraNet.Quant;

/// <summary>
/// The registry of base formats: every kind's spelling, and every checkpoint layout a loader recognises. Adding a
/// format is one new file (its value, its frozen linear, its kind) and one line here.
/// </summary>
public static class BaseFormats
{
    /// <summary>Every base-format kind, in the order --help lists them.</summary>
    public static readonly IReadOnlyList<BaseFormatKind> Kinds =
        [DenseFormat.Kind, FourBitFormat.Kind, LinearQuantFormat.Kind, LlmInt8Format.Kind, HqqFormat.Kind, TernaryFormat.Kind, Ggml.GgmlBlockFormat.Kind,
         Gptq.GptqFormat.Kind, Awq.AwqFormat.Kind, SmoothQuant.SmoothQuantFormat.Kind];

    /// <summary>Every checkpoint layout of a pre-quantized weight that the loader and `quantize` know.</summary>
    public static readonly IReadOnlyList<CheckpointLayout> Layouts =
        [BitsAndBytesFourBitLayout.Instance, BitsAndBytesEightBitLayout.Instance, HqqLayout.Instance, BitNetTernaryLayout.Instance,
         Gptq.GptqLayout.Instance, Awq.AwqLayout.Instance, SmoothQuant.W8A8Layout.Instance];

    /// <summary>Every name a spelling starts with: none, bf16, fp16, fp32, nf4, fp4, int8, int4, int3, llm-int8, hqq2..hqq8, ternary, q4_0, q8_0, gptq2..gptq8, awq4, smoothquant.</summary>
    public static IEnumerable<string> Names => Kinds.SelectMany(k => k.Names);

    /// <summary>The names of the formats quantization-aware training can target (those with a <see cref="BaseFormat.FakeQuantization"/>).</summary>
    public static IEnumerable<string> AwareNames =>
        Names.Where(n => { try { return Parse(n).FakeQuantization is not null; } catch (FormatException) { return false; } });

    /// <summary>The grammar of all spellings, for --help and errors.</summary>
    public static string Syntax => string.Join(", ", Kinds.Select(k => k.Syntax));

    /// <summary>The kind whose spellings start with <paramref name="name"/>, or null.</summary>
    public static BaseFormatKind? KindOf(string name) => Kinds.FirstOrDefault(k => k.Reads(name));

    /// <summary>
    /// A spelling cut into its kind, the name it starts with and the options after it: the longest run of leading
    /// '-'-separated tokens that some kind reads is the name ("llm-int8-t4" = llm-int8 + [t4]); null when none does.
    /// </summary>
    public static (BaseFormatKind Kind, string Name, string[] Options)? Split(string text)
    {
        var tokens = text.Trim().ToLowerInvariant().Split('-');
        for (int i = tokens.Length; i >= 1; i--)
        {
            string name = string.Join('-', tokens[..i]);
            if (KindOf(name) is { } kind) return (kind, name, tokens[i..]);
        }
        return null;
    }

    public static BaseFormat Parse(string text)
    {
        var (kind, name, options) = Split(text)
            ?? throw new FormatException($"unknown base format '{text}'; use {Syntax}");
        return kind.Parse(name, options, text);
    }

    /// <summary>
    /// The layout <paramref name="weightName"/> is stored in, judged by which keys exist among the layouts that the
    /// checkpoint's quantization_config (<paramref name="quantizationConfig"/>, null: none) admits, configured by
    /// it; null when it is a plain tensor.
    /// </summary>
    public static CheckpointLayout? StoredLayout(string weightName, Func<string, bool> contains, JsonObject? quantizationConfig = null) =>
        LayoutsFor(quantizationConfig).FirstOrDefault(l => l.IsStored(weightName, contains))?.Configured(quantizationConfig);

    /// <summary>The layouts a checkpoint with this quantization_config may hold.</summary>
    public static IEnumerable<CheckpointLayout> LayoutsFor(JsonObject? quantizationConfig) => Layouts.Where(l => l.Claims(quantizationConfig));
}
