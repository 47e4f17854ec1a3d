using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using QLoraNet.Models;
using static TorchSharp.torch;

namespace QLoraNet.Cli;

/// <summary>
/// `eval`: mean next-token loss and perplexity of a model (in any base format, with or without an adapter) on a
/// text file, tokenized with BOS and scored in windows of --max-len tokens (<see cref="WindowedLoss"/>); or on token
/// ids given as JSON, which is how the loss is compared with a reference computed elsewhere; or on a dataset through
/// the training pipeline (<see cref="DatasetEval"/>, `--data`). With --tasks it scores benchmark tasks the way
/// lm-evaluation-harness does instead (<see cref="EvalTasksMode"/>).
/// </summary>
public static class EvalCommand
{
    public const string ReferenceIdsKey = "heldout_text_first_512_ids";

    public static Command Create(TextWriter stdout)
    {
        var modelOptions = new ModelOptions();
        var textFile = new Option<string?>("--text-file") { Description = "UTF-8 text to score (tokenized with BOS)" };
        var idsFile = new Option<string?>("--token-ids-json") { Description = $"JSON array of token ids, or an object with \"{ReferenceIdsKey}\" (e.g. a model's reference.json)" };
        var maxLen = new Option<int>("--max-len") { Description = "tokens per window (the context the model sees)", DefaultValueFactory = _ => 512 };
        var stride = new Option<int?>("--stride") { Description = "start a window every this many tokens (default: max-len, no overlap); smaller = more context per scored token" };
        var json = new Option<bool>("--json") { Description = "print {\"mean_loss\", \"perplexity\", \"tokens\", \"quantization\", ...} as one JSON line (with \"outlier_columns\" per llm-int8 linear; with --tasks: the results JSON)" };
        var dataset = new DatasetEval();
        var tasks = new EvalTasksMode();
        var cmd = new Command("eval", "mean next-token loss and perplexity on a text, the training loss on a dataset (--data), or benchmark tasks scored like lm-evaluation-harness (--tasks)");
        modelOptions.AddTo(cmd);
        foreach (var o in new Option[] { textFile, idsFile, maxLen, stride, json }.Concat(dataset.Options)) cmd.Options.Add(o);
        tasks.AddTo(cmd);
        cmd.SetAction(parsed =>
        {
            string? text = parsed.GetValue(textFile), ids = parsed.GetValue(idsFile), data = parsed.GetValue(dataset.Data);
            if (parsed.GetValue(tasks.Tasks) is { } taskList)
            {
                if (text != null || ids != null || data != null) throw new ArgumentException("--tasks scores tasks; leave out --text-file, --token-ids-json and --data");
                return tasks.Run(parsed, taskList, modelOptions, parsed.GetValue(json), stdout);
            }
            if (new[] { text, ids, data }.Count(x => x is not null) != 1) throw new ArgumentException("give exactly one of --text-file, --token-ids-json and --data");
            if (data is not null)
            {
                dataset.Config(parsed); // its errors should not wait for the weights
                using var model = modelOptions.Load(parsed);
                return dataset.Run(parsed, model, parsed.GetValue(json), stdout);
            }
            if (text != null && !File.Exists(text)) throw new FileNotFoundException($"--text-file '{text}' does not exist", text);
            if (ids != null && !File.Exists(ids)) throw new FileNotFoundException($"--token-ids-json '{ids}' does not exist", ids);
            int window = parsed.GetValue(maxLen);

            // libtorch's own libraries (~200 MB resident) are mapped first, so the peak below is the load's.
            LibTorchProbe.EnsureLoaded();
            zeros(1).Dispose();
            bool peakReset = HostMemory.ResetPeak();
            long? rssBefore = HostMemory.ResidentBytes;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var loaded = modelOptions.Load(parsed);
            double loadSeconds = clock.Elapsed.TotalSeconds;
            long? loadPeak = peakReset ? HostMemory.PeakResidentBytes : null;

            var tokens = ids is null ? loaded.Tokenizer.Encode(QLoraNet.Formats.UserFile.ReadText(text!, MaxTextBytes, "--text-file")).Select(i => (long)i).ToList() : ReadIds(ids);
            var totals = WindowedLoss.Compute(loaded.Model, tokens, window, parsed.GetValue(stride) ?? window);
            string format = QuantizedCheckpoint.StoredFormat(parsed.GetValue(modelOptions.Model)!)?.ToString() ?? loaded.Format.ToString();

            var outliers = OutlierReport.Collect(loaded.Model);
            if (parsed.GetValue(json))
            {
                stdout.WriteLine(JsonSerializer.Serialize(new
                {
                    mean_loss = totals.Mean, perplexity = totals.Perplexity, tokens = totals.Tokens, quantization = format,
                    model_bytes = ModelBytes(loaded.Model), load_peak_rss_bytes = loadPeak, rss_before_load_bytes = rssBefore,
                    outlier_columns = outliers.Count == 0 ? null : outliers.ToDictionary(o => o.Module, o => o.Fraction),
                }));
                return 0;
            }
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"mean loss {totals.Mean:F5}, perplexity {totals.Perplexity:F2} over {totals.Tokens} predicted tokens (base {format}, max-len {window})"));
            stdout.WriteLine($"model tensors {ModelBytes(loaded.Model) / 1e6:F1} MB, loaded in {loadSeconds:F1} s"
                + (loadPeak is { } p && rssBefore is { } b ? $"; host RSS peak during load {p / 1e6:F1} MB (before load {b / 1e6:F1} MB)" : ""));
            foreach (var line in OutlierReport.Lines(outliers)) stdout.WriteLine(line);
            return 0;
        });
        return cmd;
    }

    /// <summary>A JSON array of ids, or an object holding one under <see cref="ReferenceIdsKey"/>.</summary>
    public static List<long> ReadIds(string path)
    {
        using var doc = QLoraNet.Formats.UserFile.ReadJson(path, MaxTextBytes, "--token-ids-json");
        var root = doc.RootElement;
        var array = root.ValueKind == JsonValueKind.Object && root.TryGetProperty(ReferenceIdsKey, out var a) ? a : root;
        if (array.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: expected a JSON array of token ids or an object with \"{ReferenceIdsKey}\"");
        return array.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long v) && v >= 0 ? v
            : throw new InvalidDataException($"{path}: token id {QLoraNet.Formats.SafeText.Clip(e.GetRawText(), 40)} is not a non-negative integer")).ToList();
    }

    /// <summary>Largest --text-file / --token-ids-json read: evaluation text, not a corpus dump.</summary>
    const long MaxTextBytes = 256L << 20;

    /// <summary>Bytes of every parameter and buffer (stored codes, scales, dense weights, rotary tables).</summary>
    static long ModelBytes(nn.Module model) =>
        model.parameters().Concat(model.buffers()).Sum(t => t.numel() * t.ElementSize);
}
