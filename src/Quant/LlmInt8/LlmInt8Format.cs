using System.Globalization;
using QLoraNet.Quant.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Quant;

/// <summary>
/// LLM.int8() (Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale"), with
/// bitsandbytes' Linear8bitLt semantics: weights int8 per output row with their absmax (SCB); at matmul time the
/// input feature columns holding any |x| >= <see cref="Threshold"/> go through a 16-bit matmul against those weight
/// columns dequantized, the rest through an int8 x int8 -> int32 matmul with per-row activation scales, and the two
/// are summed (<see cref="LlmInt8MatMul"/>). Spelling <c>llm-int8[-t&lt;threshold&gt;]</c>, threshold 6.0 by default
/// (transformers' llm_int8_threshold), any positive number. Stored under bitsandbytes' 8-bit keys
/// (<see cref="BitsAndBytesEightBitLayout"/>).
/// </summary>
public sealed record LlmInt8Format : BaseFormat
{
    public const double DefaultThreshold = 6.0;

    public static readonly BaseFormatKind Kind = new LlmInt8Kind();

    public LlmInt8Format(double Threshold = DefaultThreshold)
    {
        if (ThresholdProblem(Threshold) is { } problem) throw new ArgumentException($"llm-int8 threshold {problem}");
        this.Threshold = Threshold;
    }

    /// <summary>An input column with any |x| at or above this is an outlier column (bitsandbytes: abs() >= threshold).</summary>
    public double Threshold { get; }

    /// <summary>The problem with a threshold, or null: it must be a finite number above 0 (0 would turn the
    /// decomposition off, which bitsandbytes allows but is then plain int8 x int8: not what this format promises).</summary>
    public static string? ThresholdProblem(double threshold) =>
        double.IsFinite(threshold) && threshold > 0 ? null : $"must be a number above 0; got {threshold.ToString(CultureInfo.InvariantCulture)}";

    public override string ToString() =>
        "llm-int8" + (Threshold == DefaultThreshold ? "" : "-t" + Threshold.ToString("R", CultureInfo.InvariantCulture));

    public override FrozenLinear Create(Tensor weight, ScalarType computeDType, KernelSelection kernels, string? name = null) =>
        new LlmInt8Linear(LlmInt8Weight.Quantize(weight, (float)Threshold, name), computeDType, kernels);

    /// <summary>One int8 code per weight and one fp32 SCB per output row (bitsandbytes keeps the same).</summary>
    public override long StorageBytes(long rows, long cols, ScalarType sourceDType = ScalarType.BFloat16) =>
        rows * cols + 4 * rows;

    public override CheckpointLayout Layout => BitsAndBytesEightBitLayout.Instance;

    sealed class LlmInt8Kind : BaseFormatKind
    {
        public override IReadOnlyList<string> Names => ["llm-int8"];
        public override string Syntax => "llm-int8[-t<threshold>]";

        public override BaseFormat Parse(string name, IReadOnlyList<string> options, string text)
        {
            // A negative threshold splits at its '-' ("t-1" -> "t", "1"): read the options as one string again.
            string rest = string.Join('-', options);
            if (rest.Length == 0) return new LlmInt8Format();
            if (!rest.StartsWith('t') || !double.TryParse(rest[1..], NumberStyles.Float, CultureInfo.InvariantCulture, out double t))
                throw new FormatException($"unknown option '{rest}' in base format '{text}'; llm-int8 takes -t<threshold>, e.g. llm-int8-t6");
            if (ThresholdProblem(t) is { } problem)
                throw new FormatException($"base format '{text}': threshold {problem}");
            return new LlmInt8Format(t);
        }

        public override IReadOnlyList<string> StructuredKeys => ["threshold"];

        public override string? StructuredOption(string key, string value) => key switch
        {
            "threshold" when double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double t) =>
                ThresholdProblem(t) is { } problem ? throw new FormatException(problem)
                : t == DefaultThreshold ? null : "t" + t.ToString("R", CultureInfo.InvariantCulture),
            "threshold" => throw new FormatException($"must be a number above 0 (the outlier threshold); got '{value}'"),
            _ => base.StructuredOption(key, value),
        };
    }
}
