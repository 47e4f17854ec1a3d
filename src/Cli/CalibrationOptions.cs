using System.CommandLine;
using QLoraNet.Models;
using QLoraNet.Models.Calibration;
using QLoraNet.Quant;
using QLoraNet.Training.Data;

namespace QLoraNet.Cli;

/// <summary>
/// The options of the verbs that can make a calibrated format (GPTQ, AWQ, SmoothQuant): <c>quantize</c> and the
/// inference verbs (quantize-on-load). <c>--calibration</c> names the data (<see cref="CalibrationSamples"/>),
/// <c>--calibration-samples</c> N and <c>--calibration-seq-len</c> L its shape (AutoAWQ's defaults, 128 x 512).
/// Progress and the data's summary go to stderr.
/// </summary>
public sealed class CalibrationOptions
{
    public Option<string?> Data { get; } = new("--calibration")
    {
        Description = "calibration data for gptq/awq4/smoothquant: a .jsonl/.csv dataset (chat, instruction or completion rows, rendered with the model's template), a text file, or train:CONFIG / validation:CONFIG (that split of a training config's data)",
    };

    public Option<int> Samples { get; } = new("--calibration-samples")
    {
        Description = "calibration samples N (windows of --calibration-seq-len tokens cut from the data's token stream)",
        DefaultValueFactory = _ => CalibrationSamples.DefaultSamples,
    };

    public Option<int> SequenceLength { get; } = new("--calibration-seq-len")
    {
        Description = "tokens per calibration sample L",
        DefaultValueFactory = _ => CalibrationSamples.DefaultLength,
    };

    public IEnumerable<Option> All => [Data, Samples, SequenceLength];

    /// <summary>
    /// The calibration set for <paramref name="format"/>, or null when --calibration is absent (a calibrated format then
    /// fails to load with a message saying so). --calibration with a format that needs none is an error.
    /// </summary>
    public CalibrationSet? Build(ParseResult parsed, BaseFormat format, ITextTokenizer tokenizer, string modelDir)
    {
        string? spec = parsed.GetValue(Data);
        if (spec is null) return null;
        if (!format.NeedsCalibration)
            throw new ArgumentException($"--calibration applies to calibrated formats ({string.Join(", ", CalibratedNames)}); {format} quantizes each weight alone");
        var (set, source) = CalibrationSamples.Build(spec, tokenizer, parsed.GetValue(Samples), parsed.GetValue(SequenceLength), modelDir);
        parsed.InvocationConfiguration.Error.WriteLine(
            $"calibration: {set.Samples} samples x {set.SequenceLength} tokens from {source.Description} ({source.Tokens} tokens in {source.Rows} rows)");
        return set;
    }

    static IEnumerable<string> CalibratedNames =>
        BaseFormats.Kinds.Where(k => k.Syntax.Contains("calibrated")).SelectMany(k => k.Names);
}
