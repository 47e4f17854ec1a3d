using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;

namespace QLoraNet;

/// <summary>
/// QLoRA fine-tuning, as the CLI's <c>train</c> verb runs it: the same config (YAML file or <see cref="TrainConfig"/>),
/// the same recipe and output directory (adapter in <c>final/</c>, checkpoints, metrics.csv, loss.png, config.yaml).
/// </summary>
/// <example>
/// <code>
/// var result = await FineTuning.RunAsync("configs/quickstart.yaml", ["training.max_steps=10"],
///     new Progress&lt;TrainingProgress&gt;(p => Console.WriteLine(p)), cancellationToken);
/// Console.WriteLine(result.AdapterDirectory);
/// </code>
/// </example>
public static class FineTuning
{
    /// <summary>Reads and checks a YAML config with <c>section.key=value</c> overrides (the CLI's rules and messages).</summary>
    /// <exception cref="QLoraNetConfigException">the config is invalid (one line naming file:line and the key).</exception>
    public static TrainConfig LoadConfig(string path, IEnumerable<string>? overrides = null) =>
        Errors.Guard(() => TrainConfig.Load(path, overrides));

    /// <summary>Fine-tunes from a YAML config file.</summary>
    /// <param name="configPath">the YAML file; relative paths inside it resolve from the current directory.</param>
    /// <param name="overrides"><c>section.key=value</c> overrides, e.g. <c>training.max_steps=10</c>.</param>
    /// <param name="progress">receives the start, every optimizer step, evaluations, checkpoints and messages.</param>
    /// <param name="cancellationToken">stops after the current step; a checkpoint is saved, then <see cref="OperationCanceledException"/> is thrown.</param>
    /// <exception cref="QLoraNetConfigException">the config is invalid.</exception>
    /// <exception cref="QLoraNetModelException">the model, data or output directory cannot be used.</exception>
    /// <exception cref="QLoraNetBackendException">libtorch cannot run the config's device.</exception>
    /// <exception cref="QLoraNetTrainingException">the loss became NaN or infinite.</exception>
    public static Task<FineTuningResult> RunAsync(string configPath, IEnumerable<string>? overrides = null,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var config = LoadConfig(configPath, overrides);
        return RunAsync(config, progress, cancellationToken);
    }

    /// <summary>Fine-tunes from a config object (e.g. one from <see cref="LoadConfig"/> changed with <c>with</c>).</summary>
    /// <inheritdoc cref="RunAsync(string, IEnumerable{string}?, IProgress{TrainingProgress}?, CancellationToken)"/>
    public static Task<FineTuningResult> RunAsync(TrainConfig config, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        cancellationToken.ThrowIfCancellationRequested();
        return Task.Factory.StartNew(() => Errors.Guard(() => Run(config, progress, cancellationToken)), cancellationToken,
            TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    static FineTuningResult Run(TrainConfig config, IProgress<TrainingProgress>? progress, CancellationToken cancel)
    {
        var backend = LibTorch.Load();
        LibTorch.RequireCudaIfAsked(YamlNames.Of(config.Model.Device), "model.device");
        var result = TrainingRecipes.Run(config, new TrainOptions(), new ProgressObserver(progress), cancel);
        return result.Stop switch
        {
            TrainStop.NonFiniteLoss => throw new QLoraNetTrainingException(result.Message ?? "the loss became non-finite"),
            TrainStop.Interrupted => throw new OperationCanceledException(result.Message, cancel),
            _ => new FineTuningResult(result.OutputDir, result.FinalAdapter, result.StepsDone, result.LastLoss,
                result.InitialValidationLoss, result.BestValidationLoss, result.Stop == TrainStop.EarlyStopped, backend),
        };
    }

    /// <summary>The recipe's events as <see cref="TrainingProgress"/> values.</summary>
    sealed class ProgressObserver(IProgress<TrainingProgress>? progress) : ITrainingObserver
    {
        int _total;
        public void OnStart(RunSummary s)
        {
            _total = s.TotalSteps;
            progress?.Report(new TrainingProgress(TrainingProgressKind.Started, s.StartStep, s.TotalSteps,
                Message: $"{s.ModelPath} on {s.Device}, base {s.BaseFormat}, {s.TotalSteps} steps"));
        }
        public void OnStep(StepMetrics m) => progress?.Report(new TrainingProgress(TrainingProgressKind.Step, m.Step, m.TotalSteps,
            m.Loss, m.LearningRate, m.TokensPerSecond));
        public void OnEvaluation(int step, double loss, bool isBest) => progress?.Report(new TrainingProgress(
            TrainingProgressKind.Evaluation, step, _total, ValidationLoss: loss));
        public void OnCheckpoint(int step, string directory) => progress?.Report(new TrainingProgress(
            TrainingProgressKind.Checkpoint, step, _total, Message: directory));
        public void OnMessage(string message) => progress?.Report(new TrainingProgress(TrainingProgressKind.Message, 0, _total, Message: message));
    }
}

/// <summary>What a <see cref="TrainingProgress"/> event reports.</summary>
public enum TrainingProgressKind
{
    /// <summary>The run is set up; <see cref="TrainingProgress.Message"/> says what is trained on what.</summary>
    Started,
    /// <summary>An optimizer step is done (loss, learning rate, tokens per second).</summary>
    Step,
    /// <summary>A validation loss was measured (step 0: the base model before training).</summary>
    Evaluation,
    /// <summary>A checkpoint was saved; <see cref="TrainingProgress.Message"/> is its directory.</summary>
    Checkpoint,
    /// <summary>A note from the run (e.g. early stopping).</summary>
    Message,
}

/// <summary>One event of a fine-tuning run.</summary>
/// <param name="Kind">what happened.</param>
/// <param name="Step">the optimizer steps done so far.</param>
/// <param name="TotalSteps">the steps of the whole run.</param>
/// <param name="Loss">the step's training loss (mean over its trained tokens).</param>
/// <param name="LearningRate">the step's learning rate.</param>
/// <param name="TokensPerSecond">the step's throughput.</param>
/// <param name="ValidationLoss">the measured validation loss.</param>
/// <param name="Message">text for <see cref="TrainingProgressKind.Started"/>, checkpoints and messages.</param>
public sealed record TrainingProgress(TrainingProgressKind Kind, int Step, int TotalSteps, double? Loss = null,
    double? LearningRate = null, double? TokensPerSecond = null, double? ValidationLoss = null, string? Message = null);

/// <summary>How a fine-tuning run ended.</summary>
/// <param name="OutputDirectory">the run's output directory.</param>
/// <param name="AdapterDirectory">the final PEFT adapter (<c>final/</c>); null when no step ran.</param>
/// <param name="Steps">optimizer steps done.</param>
/// <param name="LastLoss">the last step's training loss.</param>
/// <param name="InitialValidationLoss">the base model's validation loss before training, when there is validation data.</param>
/// <param name="BestValidationLoss">the best validation loss during training.</param>
/// <param name="EarlyStopped">stopped because the validation loss stopped improving.</param>
/// <param name="LibTorch">the libtorch the run used.</param>
public sealed record FineTuningResult(string OutputDirectory, string? AdapterDirectory, int Steps, double? LastLoss,
    double? InitialValidationLoss, double? BestValidationLoss, bool EarlyStopped, LibTorchInfo LibTorch);
