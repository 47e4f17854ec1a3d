using System.Text.Json;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Models.Calibration;
using QLoraNet.Training.Config;
using static TorchSharp.torch;

namespace QLoraNet.Training.Data;

/// <summary>
/// The N x L calibration token windows a calibrated format (GPTQ, AWQ, SmoothQuant) is made from, from one of:
/// <list type="bullet">
/// <item>a .jsonl or .csv dataset in any supported data format (chat, instruction, completion: detected from the
/// first row's fields), each row rendered with the model's chat template exactly as training renders it;</item>
/// <item><c>train:CONFIG</c> or <c>validation:CONFIG</c>: that split of a training config's data section (its files,
/// format, template, truncation; the train split in the run's shuffled order);</item>
/// <item>any other file: plain UTF-8 text, tokenized with BOS.</item>
/// </list>
/// The rows' tokens are joined into one stream and cut into consecutive windows of L tokens, the first N of them
/// (AutoAWQ's get_calib_dataset does the same; AutoGPTQ's examples take random windows). A source with fewer than
/// N·L tokens is an error saying how many it has.
/// </summary>
public static class CalibrationSamples
{
    public const int DefaultSamples = 128, DefaultLength = 512;

    /// <summary>What the samples came from, for the report.</summary>
    public sealed record Source(string Description, long Tokens, int Rows);

    public static (CalibrationSet Set, Source Source) Build(string spec, ITextTokenizer tokenizer, int samples, int length, string modelDir)
    {
        if (samples < 1) throw new ArgumentException($"--calibration-samples must be at least 1, got {samples}");
        if (length < 2) throw new ArgumentException($"--calibration-seq-len must be at least 2, got {length}");
        var (stream, rows, what) = Tokens(spec, tokenizer, modelDir);
        long needed = (long)samples * length;
        if (stream.Count < needed)
            throw new InvalidDataException($"--calibration {spec}: {what} gives {stream.Count} tokens ({rows} rows), but {samples} samples x {length} tokens need {needed}; "
                + $"lower --calibration-samples to {Math.Max(1, stream.Count / length)} or --calibration-seq-len, or give more text");
        var ids = new long[needed];
        for (long i = 0; i < needed; i++) ids[i] = stream[(int)i];
        return (new CalibrationSet(tensor(ids, [samples, length], ScalarType.Int64)), new Source(what, stream.Count, rows));
    }

    /// <summary>A plain-text calibration file larger than this is not one (a few hundred samples of 2k tokens is ~5 MB).</summary>
    const long MaxTextBytes = 256L << 20;

    static (List<int> Stream, int Rows, string What) Tokens(string spec, ITextTokenizer tokenizer, string modelDir)
    {
        foreach (var split in new[] { "train", "validation" })
            if (spec.StartsWith(split + ":", StringComparison.Ordinal))
            {
                string configPath = spec[(split.Length + 1)..];
                var config = TrainConfig.Load(configPath);
                var data = split == "train"
                    ? TrainingData.Build(config.Data, tokenizer, config.Training.Seed, modelDir).Train
                    : TrainingData.Build(config.Data, tokenizer, config.Training.Seed, modelDir).Validation;
                if (data.Count == 0) throw new InvalidDataException($"--calibration {spec}: the config's {split} split is empty");
                return (data.SelectMany(s => s.InputIds).ToList(), data.Count, $"the {split} split of {configPath}");
            }
        if (!File.Exists(spec)) throw new FileNotFoundException($"--calibration '{spec}' does not exist (give a .jsonl/.csv dataset, a text file, or train:CONFIG / validation:CONFIG)", spec);
        string ext = Path.GetExtension(spec).ToLowerInvariant();
        if (DataConfig.Extensions.Contains(ext))
        {
            var format = DetectFormat(spec);
            var config = new DataConfig([spec], spec, 0, format, TemplateKind.Auto, null, 1 << 20, false,
                TrainOnInputs: true, SkipBadRows: false, new ColumnMapping());
            var data = TrainingData.ForEvaluation(config, tokenizer, [spec], modelDir).Validation;
            return (data.SelectMany(s => s.InputIds).ToList(), data.Count, $"{spec} ({YamlNames.Of(format)} rows)");
        }
        var ids = tokenizer.Encode(UserFile.ReadText(spec, MaxTextBytes, "calibration text file")).ToList();
        return (ids, 1, $"{spec} (text)");
    }

    /// <summary>chat (a "messages" field), instruction ("instruction") or completion ("text"), from the first row.</summary>
    public static DataFormat DetectFormat(string file)
    {
        IEnumerable<string> fields;
        string? first = UserFile.ReadLines(file, JsonlRows.MaxLineBytes, "calibration file").Select(l => l.Text).FirstOrDefault(l => l.Trim().Length > 0)
            ?? throw new InvalidDataException($"--calibration {file}: the file is empty");
        if (Path.GetExtension(file).Equals(".csv", StringComparison.OrdinalIgnoreCase))
            fields = first.Split(',').Select(f => f.Trim().Trim('"'));
        else
        {
            try
            {
                using var doc = JsonDocument.Parse(first);
                fields = doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.EnumerateObject().Select(p => p.Name).ToList() : [];
            }
            catch (JsonException e) { throw new InvalidDataException($"--calibration {file}:1: not a JSON object ({e.Message.Split('.')[0]})"); }
        }
        var set = fields.ToHashSet(StringComparer.Ordinal);
        if (set.Contains("messages")) return DataFormat.Chat;
        if (set.Contains("instruction")) return DataFormat.Instruction;
        if (set.Contains("text")) return DataFormat.Completion;
        throw new InvalidDataException($"--calibration {file}: the first row has none of the fields messages (chat), instruction (instruction) or text (completion)");
    }
}
