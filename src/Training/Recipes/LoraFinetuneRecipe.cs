using System.Diagnostics;
using QLoraNet.Distributed;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Optim;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Recipes;

/// <summary>
/// The QLoRA fine-tuning recipe, shaped like torchtune's lora_finetune_single_device: setup in separate steps (the
/// output directory and the checkpoint to resume, data, the model with its base quantized as it loads and its LoRA
/// adapters, optimizer, resume, schedule, then the step, loss and evaluator), apart from one visible loop: per
/// optimizer step { <see cref="TrainStep"/>; metrics; score benchmark tasks, evaluate, stop early, checkpoint as
/// configured }.
/// The per-step work (<see cref="TrainStep"/>), the loss (<see cref="ITrainingLoss"/>, here
/// <see cref="CausalLmTokenMeanLoss"/>) and validation (<see cref="Evaluator"/>) are components: another objective
/// is a sibling recipe passing its own loss, and `bench train` times the same TrainStep on random tokens. Benchmark
/// tasks (the config's <c>eval:</c> section) are scored by <see cref="TaskEvaluation"/> at the same points as the
/// validation loss: before the first step, every eval_every steps and at the end.
/// Data-parallel: a launcher runs one recipe per replica (<see cref="TrainOptions.Replicas"/>, one process per
/// GPU); every replica loads the model itself, starts from replica 0's adapter, draws the same data stream and
/// takes its block of each step's micro-batches; the step sums gradients over replicas, evaluation is sharded,
/// only replica 0 writes files and the others wait for each checkpoint (docs/DISTRIBUTED.md).
/// </summary>
public sealed class LoraFinetuneRecipe : IDisposable
{
    TrainConfig _config;
    TrainingConfig _t;
    readonly ITrainingObserver _observer;
    readonly string _outDir;
    readonly IReplicaGroup _replicas;
    readonly Func<BuiltModel, ITrainingLoss> _lossOf;

    // Set up in order by Setup; the loop reads them.
    CheckpointStore _store = null!;
    OutputDirLock? _lock;
    string? _resumeFrom;
    ITextTokenizer _tokenizer = null!;
    TrainingData _data = null!;
    Device _device = null!;
    double _loadSeconds;
    BuiltModel _built = null!;
    LlamaForCausalLM _model = null!;
    readonly RandomStream _dropoutRandom = new();
    AdapterConfig _adapterConfig = null!;
    AdamW _optimizer = null!;
    TrainerState _state = TrainerState.Start;
    BatchStream _batches = null!;
    int _totalSteps;
    LrSchedule _schedule = null!;
    TrainStep _step = null!;
    Evaluator _evaluator = null!;
    MetricsLog _metrics = null!;
    MemoryMonitor _memory = null!;
    RunReports _reports = null!;
    TaskEvaluation? _tasks;
    int? _bestStep;
    int? _lastCheckpointStep;

    LoraFinetuneRecipe(TrainConfig config, ITrainingObserver observer, IReplicaGroup? replicas, Func<BuiltModel, ITrainingLoss>? lossOf)
    {
        _lossOf = lossOf ?? (built => CausalLmTokenMeanLoss.With(built.Kernels.Fused));
        _config = config;
        _t = config.Training;
        _observer = observer;
        _outDir = config.Output.Dir;
        _replicas = replicas ?? SingleReplica.Instance;
    }

    /// <summary>Replica 0 writes the run's files (config, metrics, checkpoints, adapter, curve); the others only train.</summary>
    bool WritesFiles => _replicas.Rank == 0;

    /// <summary>Sets up and runs the whole job; returns how it ended.</summary>
    public static TrainResult Run(TrainConfig config, TrainOptions options, ITrainingObserver observer, CancellationToken cancel) =>
        Run(config, options, observer, cancel, null);

    /// <summary>The same job minimising another objective's loss (a sibling recipe's, <see cref="DpoRecipe"/>), made
    /// for the built model; its data comes from the config's data section as always. Null: next-token cross-entropy.</summary>
    internal static TrainResult Run(TrainConfig config, TrainOptions options, ITrainingObserver observer, CancellationToken cancel,
        Func<BuiltModel, ITrainingLoss>? lossOf)
    {
        using var recipe = new LoraFinetuneRecipe(config, observer, options.Replicas, lossOf);
        recipe.Setup(options);
        return recipe.Train(cancel);
    }

    void Setup(TrainOptions options)
    {
        SetupOutput(options);
        SetupData();
        SetupModel(options.Kernels);
        SetupOptimizer();
        SetupResume();
        SetupSchedule();
        SetupStep();
        SetupTaskEvaluation();
        _observer.OnStart(new RunSummary(_config.Model.Path, _device + (_replicas.Size > 1 ? $" (rank 0 of {_replicas.Size} data-parallel replicas)" : ""), _model.Model.ComputeDType.ToString(),
            _built.BaseFormat.ToString(), TrainableParameters.Count(_model), _data.Stats, _totalSteps, _state.Step,
            _batches.PerEpoch, _t.MicroBatchSize * _t.GradientAccumulationSteps * _replicas.Size, _loadSeconds,
            _built.BaseBytes, _t.LogEvery, _built.Kernels.Report()));
        if (_config.Quantization.Aware is { } aware)
            _observer.OnMessage($"quantization-aware training: every decoder linear computes as {aware} would (LoRA inside the merged weight, straight-through gradients); "
                + (aware.Layout is null ? $"merge dense and load with --quantization {aware} (or export to GGUF) to keep it" : $"merge with --quantization {aware} to keep it"));
        if (_state.Step >= _totalSteps)
            _observer.OnMessage($"checkpoint is at step {_state.Step}, the run has {_totalSteps} steps: nothing to do");
    }

    /// <summary>
    /// The checkpoint store, the checkpoint to resume (refused when the config changed in a way it cannot honour,
    /// <see cref="ResumeCompatibility"/>), or a guard against overwriting an earlier run; then, for the replica that
    /// writes, the output folder's lock, the leftovers of interrupted runs, the resolved config. Nothing is written
    /// before every check has passed.
    /// </summary>
    void SetupOutput(TrainOptions options)
    {
        _store = new CheckpointStore(_outDir, _config.Output.KeepLast, _observer.OnCheckpointFileWritten, _observer.OnCheckpointPruning,
            ResumeCompatibility.Snapshot(_config));
        if (WritesFiles) OutputDirLock.ThrowIfHeld(_outDir);
        _resumeFrom = RunOutput.ResolveResume(options.Resume, _store);
        var changes = _resumeFrom is null ? [] : ResumeCompatibility.Check(_resumeFrom, _config, options.ResumeWithChanges);
        if (_resumeFrom is null) RunOutput.GuardNewRun(_outDir, _store);
        else KeepGlobalBatch(TrainerState.Load(_resumeFrom));
        if (!WritesFiles) return;
        _lock = OutputDirLock.Acquire(_outDir);
        foreach (var done in RunOutput.RemoveLeftovers(_outDir, _store)) _observer.OnMessage($"leftover of an interrupted run: {done}");
        int? resumedStep = _resumeFrom is null ? null : TrainerState.Load(_resumeFrom).Step;
        string? recorded = RunOutput.WriteResolvedConfig(_outDir, _config, resumedStep, changes.Count > 0);
        foreach (var change in changes) _observer.OnMessage($"resuming with a changed config (--resume-with-changes): {change}");
        if (changes.Count > 0) _observer.OnMessage($"the config of this resume is recorded in {recorded}");
    }

    /// <summary>A checkpoint of another world size continues with its global batch: the accumulation per replica
    /// changes to keep it, or the run refuses (<see cref="RankShard.AccumulationToResume"/>).</summary>
    void KeepGlobalBatch(TrainerState saved)
    {
        if (saved.WorldSize is not { } world || saved.MicroBatchSize is not { } micro || saved.GradientAccumulationSteps is not { } accumulation) return;
        int keep = new RankShard(_replicas.Rank, _replicas.Size, _t.GradientAccumulationSteps).AccumulationToResume(micro, accumulation, world, _t.MicroBatchSize);
        if (keep == _t.GradientAccumulationSteps) return;
        _observer.OnMessage($"the checkpoint was trained on {world} replica(s) with gradient_accumulation_steps {accumulation}; "
            + $"on {_replicas.Size} this run uses {keep} to keep its global batch of {micro * accumulation * world} sequences");
        _t = _t with { GradientAccumulationSteps = keep };
        _config = _config with { Training = _t };
    }

    /// <summary>Read, render, tokenize, mask, pack; shuffled by the seed.</summary>
    void SetupData()
    {
        _tokenizer = TextTokenizers.Load(_config.Model.Path);
        _data = TrainingData.Build(_config.Data, _tokenizer, _t.Seed, _config.Model.Path);
    }

    /// <summary>
    /// The base model, its decoder linears quantized as they stream in, with fresh LoRA adapters on the target
    /// modules (A from the seed; dropout masks from the run's stream, which the step reseeds) and everything else
    /// frozen: assembled by <see cref="ModelBuilder"/>, as the inference verbs and `bench train` assemble theirs.
    /// </summary>
    /// <param name="kernels">the caller's kernel choices for the run's device; null = the defaults for it.</param>
    void SetupModel(KernelSelection? kernels)
    {
        _device = _replicas.Device ?? DeviceChoice.Resolve(_config.Model.Device.ToString().ToLowerInvariant(), "model.device");
        var compute = DTypes.ToScalar(_config.Quantization.ComputeDtype);
        var frozen = DTypes.ToScalar(_config.Model.Dtype);
        var clock = Stopwatch.StartNew();
        _built = ModelBuilder.Build(_config.Model.Path, new ModelBuildOptions(_device, compute, _config.Quantization.Format,
            kernels ?? KernelSelection.For(_device), frozen, _t.GradientCheckpointing, _t.UncheckpointedLayers,
            NewAdapter: _config.Lora, AdapterSeed: _t.Seed, AdapterDropout: _dropoutRandom, AdapterInitDir: _config.LoraInitFrom,
            Aware: _config.Quantization.Aware, AllowNonFiniteWeights: _config.Model.AllowNonFiniteWeights, EmbeddingOnHost: _t.EmbeddingOnHost,
            KeepDequantizedWeights: _t.KeepDequantizedWeights, CheckpointsOnHost: _t.CheckpointsOnHost));
        (_model, _adapterConfig) = (_built.Model, _built.Adapter!);
        _loadSeconds = clock.Elapsed.TotalSeconds;
        if (_config.LoraInitFrom is { } init && _resumeFrom is null)
            _observer.OnMessage($"lora.init_from: adapters start from {init} (r {_config.Lora.R}); alpha {_config.Lora.Alpha} and dropout {_config.Lora.Dropout} are this config's");
    }

    void SetupOptimizer()
    {
        var trainable = _model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter));
        _optimizer = new AdamW(trainable, _t.LearningRate, _t.AdamBeta1, _t.AdamBeta2, _t.AdamEpsilon, _t.WeightDecay,
            _built.Kernels.Fused.AdamW, momentsOnHost: _t.OptimizerOnHost);
        if (_t.OptimizerOnHost && _device.type == DeviceType.CUDA)
        {
            var sizes = trainable.Select(p => p.Item2.numel()).ToList();
            _observer.OnMessage($"training.optimizer_on_host: AdamW's moments ({8.0 * sizes.Sum() / (1 << 20):F0} MiB) in pinned host memory, paged through a "
                + $"{8.0 * HostMoments.Capacity(sizes.DefaultIfEmpty().Max()) / (1 << 20):F0} MiB device window at each update");
        }
    }

    /// <summary>Adapter, optimizer moments and trainer state (data position, best validation loss) of the checkpoint;
    /// then every replica takes replica 0's adapter (fresh or resumed) once all have loaded the model.</summary>
    void SetupResume()
    {
        if (_resumeFrom != null) _state = TrainingCheckpoint.Load(_resumeFrom, _model, _adapterConfig, _optimizer);
        _lastCheckpointStep = _resumeFrom != null ? _state.Step : null;
        _state = _state with { WorldSize = _replicas.Size, MicroBatchSize = _t.MicroBatchSize, GradientAccumulationSteps = _t.GradientAccumulationSteps };
        if (_replicas.Size == 1) return;
        _replicas.Barrier(ModelLoadTimeout);
        _replicas.Broadcast(_model.parameters().Where(p => p.requires_grad).Select(p => (Tensor)p).ToList());
    }

    /// <summary>How long replicas wait for each other to load the model (quantizing a 70B base as it streams in
    /// takes minutes, longer on a slow disk); a replica that dies meanwhile is noticed at once.</summary>
    static readonly TimeSpan ModelLoadTimeout = TimeSpan.FromHours(1);

    /// <summary>The data from where the run stands, the number of steps, the learning-rate schedule.</summary>
    void SetupSchedule()
    {
        _batches = new BatchStream(_data, _t.MicroBatchSize, _state.Epoch, _state.MicroBatch);
        _totalSteps = _t.TotalSteps(_batches.PerEpoch, _replicas.Size);
        _schedule = new LrSchedule(DTypes.Name(_t.Scheduler), _t.LearningRate, _t.Warmup(_totalSteps), _totalSteps);
    }

    /// <summary>The loss, the step that minimises it, the evaluator that measures it, the metrics log.</summary>
    void SetupStep()
    {
        var loss = _lossOf(_built);
        _step = new TrainStep(_model, _optimizer, loss,
            new TrainStepSettings(_t.GradientAccumulationSteps, _t.MaxGradNorm, _t.Seed), _dropoutRandom, _replicas);
        _evaluator = new Evaluator(_model, loss, _replicas);
        _metrics = new MetricsLog(WritesFiles ? Path.Combine(_outDir, RunOutput.MetricsFile) : null, _state.Step);
        _memory = new MemoryMonitor(_device);
        if (_memory.AllocatorUnavailable is { } why && WritesFiles)
            _observer.OnMessage($"memory: the CUDA allocator's allocated/reserved peaks are not reported ({why}); the device figure is the driver's used memory");
        _reports = RunReports.Create(_config, WritesFiles, _state.Step, _model, _tokenizer, _built.Architecture, _observer);
    }

    /// <summary>The benchmark tasks of the <c>eval:</c> section, if any; replica 0 scores them (the others' model is the same).</summary>
    void SetupTaskEvaluation()
    {
        if (_config.EvalTasks.Tasks.Count > 0 && WritesFiles) _tasks = new TaskEvaluation(_model, _tokenizer, _config.EvalTasks);
    }

    /// <summary>The loop: one optimizer step at a time, with evaluation, early stopping and checkpoints as configured.</summary>
    TrainResult Train(CancellationToken cancel)
    {
        // The base model's validation loss, before any step: the "before" of the run's before/after.
        // Skipped when a stop was asked for while the model loaded: the run ends before its first step, nothing saved.
        // The replicas agree on it (validation sums across them; one that skipped it would leave the others waiting).
        bool starting = _state.Step == 0 && _totalSteps > 0 && _replicas.Sum(cancel.IsCancellationRequested ? 1 : 0) == 0;
        double? initialValidation = starting && _data.Validation.Count > 0 ? Validate(0) : null;
        if (starting)
        {
            _reports.Sample(0);
            ScoreTasks(0, cancel);
        }
        var clock = Stopwatch.StartNew();
        double elapsedBefore = _metrics.Rows.LastOrDefault()?.ElapsedSeconds ?? 0;
        var stop = TrainStop.Completed;
        string? message = null;

        // Each step's outcome is read after the next step is launched (StepInFlight), so the GPU runs on while the
        // host records one step and issues the next; only where something must see the model after a step
        // (evaluation, samples, a checkpoint, the end) is that step read before anything else is launched.
        // A step's time runs from its launch to the next launch (read one late, the host is throttled to the GPU's
        // pace, so launches are a step apart; on the CPU a launch is the step's work), or to its read when it is
        // read before anything else is launched.
        Launched? pending = null;
        bool Read(Launched l, double? nextLaunchedAt = null)
        {
            var outcome = l.Step.Outcome;
            double now = clock.Elapsed.TotalSeconds;
            double seconds = (nextLaunchedAt ?? now) - l.LaunchedAt;
            if (!outcome.IsFinite)
            {
                stop = TrainStop.NonFiniteLoss;
                string what = double.IsFinite(outcome.Loss) ? $"the gradient norm is {outcome.GradNorm}" : $"loss is {outcome.Loss}";
                message = $"{what} at step {l.Step.Step + 1}; stopped without saving it. Last good checkpoint: "
                    + (_store.Latest() ?? "none") + ". Lower training.learning_rate or raise training.warmup_steps, then --resume";
                return false;
            }
            _state = _state with
            {
                Step = l.Step.Step + 1, Epoch = l.Epoch, MicroBatch = l.MicroBatch,
                TokensSeen = _state.TokensSeen + outcome.InputTokens, LastLoss = outcome.Loss,
            };
            RecordStep(outcome, l.LearningRate, seconds, elapsedBefore + now);
            return true;
        }

        for (int step = _state.Step; step < _totalSteps; step++)
        {
            // All replicas stop at the same step (one that ran on alone would wait forever in the step's sums).
            if (_replicas.Sum(cancel.IsCancellationRequested ? 1 : 0) > 0)
            {
                stop = TrainStop.Interrupted;
                break;
            }
            double lr = _schedule.At(step);
            double launchedAt = clock.Elapsed.TotalSeconds;
            StepInFlight inFlight;
            try
            {
                inFlight = _step.Launch(step, lr, _batches);
            }
            catch (Exception e) when (OutOfMemoryAdvice.IsOutOfMemory(e))
            {
                throw new InvalidOperationException(OutOfMemoryAdvice.For(e, step + 1, _t, _config.Data.MaxSeqLen, OutOfMemoryAdvice.AllocatorConfigOfProcess()), e);
            }
            var launched = new Launched(inFlight, lr, _batches.Epoch, _batches.MicroBatch, launchedAt);
            // The step before, read while the device runs this one. A non-finite one stops the run: this step's
            // update has happened, but nothing after the last checkpoint is saved.
            if (pending is { } before && !Read(before, launchedAt))
            {
                pending = null;
                break;
            }
            pending = launched;

            bool last = step + 1 == _totalSteps;
            bool evaluates = Every(_t.EvalEvery, step + 1) || last;
            if (!evaluates && !(Every(_t.SaveEvery, step + 1) && !last)) continue;
            pending = null;
            if (!Read(launched)) break;
            if (evaluates)
            {
                _reports.Sample(step + 1);
                ScoreTasks(step + 1, cancel);
            }
            if (_data.Validation.Count > 0 && evaluates)
            {
                Validate(step + 1);
                if (_t.EarlyStoppingPatience is { } patience && _state.EvaluationsWithoutImprovement >= patience)
                {
                    stop = TrainStop.EarlyStopped;
                    message = $"early stopping: validation loss has not improved for {patience} evaluations (best {_state.BestValidationLoss:F4})";
                    break;
                }
            }
            if (Every(_t.SaveEvery, step + 1) && !last) SaveCheckpoint();
        }
        // An interrupted run saves the last step it launched: read it first.
        if (pending is { } left) Read(left);
        return Finish(stop, message, initialValidation);
    }

    static bool Every(int interval, int step) => interval > 0 && step % interval == 0;

    /// <summary>A launched step with what its record needs from the moment of launch: the learning rate and the data
    /// position after its micro-batches (the stream has moved on by the time it is read).</summary>
    sealed record Launched(StepInFlight Step, double LearningRate, int Epoch, int MicroBatch, double LaunchedAt);

    /// <summary>Validation loss at <paramref name="step"/> (0: the base model), recorded and reported; tracks the best.</summary>
    double Validate(int step)
    {
        double loss = _evaluator.MeanLoss(_data.ValidationBatches(_t.MicroBatchSize));
        _memory.Observe();
        _reports.Validation(step, loss);
        if (step == 0)
        {
            _metrics.Append(MetricsLog.Row.BeforeTraining(loss, _memory.TakeInterval()));
            _observer.OnEvaluation(0, loss, false);
            return loss;
        }
        _metrics.SetValidationLoss(step, loss);
        bool best = _state.BestValidationLoss is null || loss < _state.BestValidationLoss;
        _state = best
            ? _state with { BestValidationLoss = loss, EvaluationsWithoutImprovement = 0 }
            : _state with { EvaluationsWithoutImprovement = _state.EvaluationsWithoutImprovement + 1 };
        if (best) _bestStep = step;
        _observer.OnEvaluation(step, loss, best);
        return loss;
    }

    /// <summary>Benchmark task scores at <paramref name="step"/> (0: the base model): metrics.csv columns and a log line.</summary>
    void ScoreTasks(int step, CancellationToken cancel)
    {
        if (_tasks?.Score(step, cancel) is not { } scores) return;
        _metrics.SetTaskScores(step, scores);
        _observer.OnMessage($"tasks step {step,5}  {TaskEvaluation.Describe(scores)}" + (step == 0 ? "  (base model, before training)" : ""));
    }

    /// <summary>A metrics.csv row and the observer's step event.</summary>
    void RecordStep(StepOutcome o, double lr, double stepSeconds, double elapsed)
    {
        int step = _state.Step;
        int firstStep = _metrics.Rows.FirstOrDefault(r => r.IsStep)?.Step ?? step;
        double rate = (step - firstStep + 1) / Math.Max(1e-9, elapsed);
        var memory = _memory.TakeInterval();
        double tokensPerSecond = o.InputTokens / Math.Max(1e-9, stepSeconds);
        var row = new MetricsLog.Row(step, _batches.Progress, o.Loss, null, lr, o.GradNorm, o.InputTokens,
            tokensPerSecond, stepSeconds, elapsed, memory.HostRssMb, memory.HostPeakRssMb, memory.DeviceUsedPeakMb,
            memory.DeviceAllocatedPeakMb, memory.DeviceReservedPeakMb, o.LossTerms);
        _metrics.Append(row);
        _reports.Step(row);
        _observer.OnStep(new StepMetrics(step, _totalSteps, _batches.Progress, o.Loss, lr, o.GradNorm, o.InputTokens,
            tokensPerSecond, stepSeconds, elapsed, (_totalSteps - step) / Math.Max(1e-9, rate), (long)(memory.HostRssMb * 1048576), memory, o.LossTerms));
    }

    /// <summary>Replica 0 writes the checkpoint; the others wait until it is complete, so that none runs ahead of
    /// the last good checkpoint (and a replica 0 that fails while writing stops them all).</summary>
    void SaveCheckpoint()
    {
        if (WritesFiles)
            _observer.OnCheckpoint(_state.Step, TrainingCheckpoint.Save(_store, _state, _model, _adapterConfig, _optimizer, _bestStep));
        _replicas.Barrier();
        _lastCheckpointStep = _state.Step;
    }

    /// <summary>The last checkpoint and the final adapter (unless the loss went non-finite), the loss curve, the result.</summary>
    TrainResult Finish(TrainStop stop, string? message, double? initialValidation)
    {
        string? finalAdapter = null;
        if (stop != TrainStop.NonFiniteLoss && _state.Step > 0)
        {
            if (_lastCheckpointStep != _state.Step) SaveCheckpoint();
            if (stop != TrainStop.Interrupted)
            {
                finalAdapter = Path.Combine(_outDir, RunOutput.FinalAdapterDir);
                if (WritesFiles) AdapterFiles.Save(finalAdapter, _model, _adapterConfig);
            }
        }
        if (WritesFiles && _metrics.Rows.Count > 0) _reports.DrawLossCurve(_metrics.Rows);
        if (stop == TrainStop.Interrupted)
            message = _state.Step == 0 ? "interrupted before the first step; nothing was saved" : $"interrupted at step {_state.Step}; resume with --resume";
        return new TrainResult(_outDir, finalAdapter, _state.Step, _state.LastLoss, _state.BestValidationLoss, stop, message, initialValidation,
            _memory.RunPeak, _tasks?.Last, _tasks?.Initial, _memory.AllocatorUnavailable);
    }

    public void Dispose()
    {
        _step?.Dispose();
        _optimizer?.Dispose();
        _built?.Dispose();
        _lock?.Dispose();
    }
}
