using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Cli;

/// <summary>
/// `eval --data FILE`: the training pipeline's loss on any dataset: rows read, rendered with the template, masked
/// (prompt tokens excluded), truncated and packed as `train` does with its validation file, batched in
/// --micro-batch-size rows, and scored by the recipe's <see cref="Evaluator"/> with its
/// <see cref="CausalLmTokenMeanLoss"/> (mean over trained tokens). So for the same adapter, file and settings it is
/// the validation loss `train` reports. The options mirror the data keys of a training config.
/// Preference data (--format preference) is scored as a DPO run scores its validation pairs instead
/// (<see cref="DpoLoss"/>, the adapter against the same model with it switched off): the DPO loss, and TRL's
/// preference accuracy (pairs whose chosen answer gained more log-probability than the rejected one) and mean reward
/// margin.
/// </summary>
public sealed class DatasetEval
{
    public Option<string?> Data { get; } = new("--data") { Description = "a .jsonl or .csv dataset to score with the training pipeline (template, masking, truncation): the loss over its trained (answer) tokens" };
    public Option<string> Format { get; } = new("--format") { Description = "with --data: chat | instruction | completion | preference (as data.format; preference: DPO pairs, scored against the model without its adapter)", DefaultValueFactory = _ => "chat" };
    public Option<string> Template { get; } = new("--template") { Description = "with --data: the chat template, as data.template (auto: the one the model ships)", DefaultValueFactory = _ => "auto" };
    public Option<int> MaxSeqLen { get; } = new("--max-seq-len") { Description = "with --data: truncate examples to this many tokens (as data.max_seq_len)", DefaultValueFactory = _ => 512 };
    public Option<bool> Packing { get; } = new("--packing") { Description = "with --data: pack short examples into rows (as data.packing)" };
    public Option<string?> SystemPrompt { get; } = new("--system-prompt") { Description = "with --data: system prompt for rows without one (as data.system_prompt)" };
    public Option<int> MicroBatchSize { get; } = new("--micro-batch-size") { Description = "with --data: rows per forward (as training.micro_batch_size; the mean does not depend on it beyond rounding)", DefaultValueFactory = _ => 4 };
    public Option<double> DpoBeta { get; } = new("--dpo-beta") { Description = "with --format preference: DPO's beta (as training.dpo_beta)", DefaultValueFactory = _ => 0.1 };
    public Option<string> DpoLossOption { get; } = new("--dpo-loss") { Description = "with --format preference: sigmoid | hinge | ipo (as training.dpo_loss)", DefaultValueFactory = _ => "sigmoid" };
    public Option<double> DpoLabelSmoothing { get; } = new("--dpo-label-smoothing") { Description = "with --format preference and --dpo-loss sigmoid: cDPO's epsilon (as training.dpo_label_smoothing)", DefaultValueFactory = _ => 0.0 };

    public DatasetEval()
    {
        Format.AcceptOnlyFromAmong(YamlNames.Choices<DataFormat>().ToArray());
        Template.AcceptOnlyFromAmong(YamlNames.Choices<TemplateKind>().ToArray());
        DpoLossOption.AcceptOnlyFromAmong(YamlNames.Choices<DpoLossKind>().ToArray());
    }

    public IEnumerable<Option> Options => [Data, Format, Template, MaxSeqLen, Packing, SystemPrompt, MicroBatchSize, DpoBeta, DpoLossOption, DpoLabelSmoothing];

    /// <summary>The data settings of the options, checked as the config checks its data section.</summary>
    public DataConfig Config(ParseResult parsed)
    {
        string file = parsed.GetValue(Data)!;
        if (!DataConfig.Extensions.Contains(Path.GetExtension(file).ToLowerInvariant()))
            throw new ArgumentException($"--data '{file}' has an unsupported extension; use {string.Join(" or ", DataConfig.Extensions)}");
        if (!File.Exists(file)) throw new FileNotFoundException($"--data '{file}' does not exist", file);
        int maxSeqLen = parsed.GetValue(MaxSeqLen);
        if (maxSeqLen < 8) throw new ArgumentException($"--max-seq-len must be at least 8, got {maxSeqLen}");
        if (parsed.GetValue(MicroBatchSize) < 1) throw new ArgumentException($"--micro-batch-size must be at least 1, got {parsed.GetValue(MicroBatchSize)}");
        YamlNames.TryParse<DataFormat>(parsed.GetValue(Format)!, out var format);
        YamlNames.TryParse<TemplateKind>(parsed.GetValue(Template)!, out var template);
        if (format is DataFormat.Chat or DataFormat.Preference && template == TemplateKind.Alpaca)
            throw new ArgumentException($"--template alpaca renders instruction rows only; use a chat template (or auto, none) with --format {YamlNames.Of(format)}");
        if (format == DataFormat.Preference && parsed.GetValue(Packing))
            throw new ArgumentException("--packing does not apply to --format preference: each row holds one pair");
        if (!(parsed.GetValue(DpoBeta) > 0)) throw new ArgumentException($"--dpo-beta must be positive, got {parsed.GetValue(DpoBeta)}");
        double smoothing = parsed.GetValue(DpoLabelSmoothing);
        if (!(smoothing >= 0 && smoothing < 0.5)) throw new ArgumentException($"--dpo-label-smoothing must be in [0, 0.5), got {smoothing}");
        if (smoothing > 0 && parsed.GetValue(DpoLossOption) != "sigmoid")
            throw new ArgumentException($"--dpo-label-smoothing applies to --dpo-loss sigmoid only, got {parsed.GetValue(DpoLossOption)}");
        return new DataConfig([file], file, 0, format, template, parsed.GetValue(SystemPrompt), maxSeqLen, parsed.GetValue(Packing),
            TrainOnInputs: false, SkipBadRows: false, new ColumnMapping());
    }

    /// <summary>Scores the dataset with the loaded model and prints the result (one JSON line with --json).</summary>
    public int Run(ParseResult parsed, ModelOptions.Loaded loaded, bool json, TextWriter stdout)
    {
        var config = Config(parsed);
        var data = TrainingData.ForEvaluation(config, loaded.Tokenizer, config.Train, loaded.ModelDir);
        if (config.Format == DataFormat.Preference) return RunPreference(parsed, loaded, data, config, json, stdout);
        var loss = CausalLmTokenMeanLoss.With(loaded.Kernels.Fused);
        int batchSize = parsed.GetValue(MicroBatchSize);
        long terms = data.ValidationBatches(batchSize).Sum(b => (long)loss.Count(b));
        double mean = new Evaluator(loaded.Model, loss).MeanLoss(data.ValidationBatches(batchSize));
        if (json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(new
            {
                mean_loss = mean, perplexity = Math.Exp(mean), trained_tokens = terms, examples = data.Stats.ValidationExamples,
                sequences = data.Stats.ValidationSequences, truncated = data.Stats.Truncated, dropped = data.Stats.Dropped,
                quantization = loaded.Format.ToString(),
            }));
            return 0;
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"mean loss {mean:F5}, perplexity {Math.Exp(mean):F2} over {terms} trained tokens of {data.Stats.ValidationExamples} examples in {data.Stats.ValidationSequences} sequences "
            + $"({YamlNames.Of(config.Format)}, template {YamlNames.Of(config.Template)}, max-seq-len {config.MaxSeqLen}{(config.Packing ? ", packed" : "")}; truncated {data.Stats.Truncated}, dropped {data.Stats.Dropped}; base {loaded.Format})"));
        return 0;
    }

    /// <summary>DPO's view of preference pairs: loss, accuracy and reward margin over all of them (the loaded model is
    /// in eval mode, <see cref="ModelOptions"/>).</summary>
    int RunPreference(ParseResult parsed, ModelOptions.Loaded loaded, TrainingData data, DataConfig config, bool json, TextWriter stdout)
    {
        double beta = parsed.GetValue(DpoBeta);
        YamlNames.TryParse<DpoLossKind>(parsed.GetValue(DpoLossOption)!, out var kind);
        var loss = new DpoLoss(beta, kind, parsed.GetValue(DpoLabelSmoothing));
        var model = loaded.Model;
        var margins = new List<double>();
        using (TorchSharp.torch.no_grad())
            foreach (var batch in data.ValidationBatches(parsed.GetValue(MicroBatchSize)))
            {
                using var scope = TorchSharp.torch.NewDisposeScope();
                margins.AddRange(loss.Margins(model, batch).to(TorchSharp.torch.ScalarType.Float64).cpu().data<double>().ToArray());
            }
        double mean;
        using (var all = TorchSharp.torch.tensor(margins.ToArray()))
        using (var losses = loss.PairLosses(all))
            mean = losses.mean().item<double>();
        int right = margins.Count(m => m > 0);
        double accuracy = (double)right / margins.Count, rewardMargin = beta * margins.Average();
        bool adapter = model.modules().OfType<QLoraNet.Peft.LoraLinear>().Any();
        if (json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(new
            {
                dpo_loss = mean, preference_accuracy = accuracy, reward_margin = rewardMargin, pairs = margins.Count, beta,
                loss_type = YamlNames.Of(kind),
                truncated = data.Stats.Truncated, dropped = data.Stats.Dropped, quantization = loaded.Format.ToString(),
            }));
            return 0;
        }
        string note = adapter ? "" : ". No --adapter: the model is its own reference, so every margin is 0";
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"DPO loss {mean:F5} ({YamlNames.Of(kind)}, beta {beta}), preference accuracy {accuracy:F4} ({right} of {margins.Count} pairs rank the chosen answer above the rejected one), "
            + $"mean reward margin {rewardMargin:F4}; template {YamlNames.Of(config.Template)}, max-seq-len {config.MaxSeqLen}; conversations truncated {data.Stats.Truncated}, pairs dropped {data.Stats.Dropped}; base {loaded.Format}{note}"));
        return 0;
    }
}
