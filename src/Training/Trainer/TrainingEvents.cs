using QLoraNet.Peft;
using QLoraNet.Training.Data;

namespace QLoraNet.Training.Trainer;

/// <summary>What a run reports as it goes; the CLI renders it, tests collect it. Called on the training thread.</summary>
public interface ITrainingObserver
{
    void OnStart(RunSummary summary);
    void OnStep(StepMetrics metrics);
    void OnEvaluation(int step, double validationLoss, bool isBest);
    void OnCheckpoint(int step, string directory);
    void OnMessage(string message);
}

/// <summary>Printed once at the start: what is being trained on what.</summary>
public sealed record RunSummary(
    string ModelPath,
    string Device,
    string ComputeDType,
    string BaseFormat,
    ParameterCount Parameters,
    DataStats Data,
    int TotalSteps,
    int StartStep,
    int MicroBatchesPerEpoch,
    int SequencesPerStep,
    double LoadSeconds,
    long BaseBytes,
    int LogEvery = 10);

/// <summary>One optimizer step. Loss is the mean over the step's trained (unmasked) tokens.</summary>
public sealed record StepMetrics(
    int Step,
    int TotalSteps,
    double Epoch,
    double Loss,
    double LearningRate,
    double GradNorm,
    long Tokens,
    double TokensPerSecond,
    double StepSeconds,
    double ElapsedSeconds,
    double EtaSeconds,
    long MemoryBytes);

/// <summary>How a run ended.</summary>
public sealed record TrainResult(
    string OutputDir,
    string? FinalAdapter,
    int StepsDone,
    double? LastLoss,
    double? BestValidationLoss,
    TrainStop Stop,
    string? Message,
    double? InitialValidationLoss = null,
    IReadOnlyDictionary<string, double>? TaskScores = null,
    IReadOnlyDictionary<string, double>? InitialTaskScores = null);

public enum TrainStop { Completed, EarlyStopped, Interrupted, NonFiniteLoss }

/// <summary>An observer that ignores everything (library use, benchmarks).</summary>
public sealed class NullObserver : ITrainingObserver
{
    public static readonly NullObserver Instance = new();
    public void OnStart(RunSummary summary) { }
    public void OnStep(StepMetrics metrics) { }
    public void OnEvaluation(int step, double validationLoss, bool isBest) { }
    public void OnCheckpoint(int step, string directory) { }
    public void OnMessage(string message) { }
}
