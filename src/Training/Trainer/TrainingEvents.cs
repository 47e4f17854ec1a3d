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

    /// <summary>A file or directory of a checkpoint is complete in its staging directory (before the checkpoint is
    /// published). Throwing aborts the save, as a kill would: the previous checkpoints stay intact.</summary>
    void OnCheckpointFileWritten(string path) { }

    /// <summary>Pruning is about to hide (rename) an old checkpoint or delete one of its files. Throwing stops the
    /// prune there, as a kill would: the checkpoint is either whole under its name or hidden, never listed broken.</summary>
    void OnCheckpointPruning(string path) { }

    /// <summary>The greedy answers to training.sample_prompts at a step (0: the base model, before training).</summary>
    void OnSamples(IReadOnlyList<SampleGeneration> samples) { }
}

/// <summary>Printed once at the start: what is being trained on what (and which kernels run: <c>Kernels</c>).</summary>
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
    int LogEvery = 10,
    IReadOnlyList<string>? Kernels = null);

/// <summary>One optimizer step. Loss is the mean over the step's trained (unmasked) tokens (<see cref="TrainedTokens"/>
/// of them); <see cref="HostRssBytes"/> is the process's resident memory on the host; <see cref="Memory"/> the step's
/// memory figures, each named for what it measures (host peak RSS; on CUDA the allocator's allocated and reserved
/// peaks and the device's used memory).</summary>
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
    long HostRssBytes,
    MemorySample? Memory = null,
    long TrainedTokens = 0);

/// <summary>How a run ended; <see cref="PeakMemory"/> the largest of each memory figure over the run, and on a CUDA run
/// whose allocator counters could not be read, <see cref="DeviceAllocatorUnavailable"/> says why.</summary>
public sealed record TrainResult(
    string OutputDir,
    string? FinalAdapter,
    int StepsDone,
    double? LastLoss,
    double? BestValidationLoss,
    TrainStop Stop,
    string? Message,
    double? InitialValidationLoss = null,
    MemorySample? PeakMemory = null,
    IReadOnlyDictionary<string, double>? TaskScores = null,
    IReadOnlyDictionary<string, double>? InitialTaskScores = null,
    string? DeviceAllocatorUnavailable = null);

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
