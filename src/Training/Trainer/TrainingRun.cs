using System.Diagnostics;
using QLoraNet.Formats;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Quant;
using QLoraNet.Training.Config;
using QLoraNet.Training.Data;
using QLoraNet.Training.Optim;
using TorchSharp;
using static TorchSharp.torch;

namespace QLoraNet.Training.Trainer;

/// <summary>Options of one invocation that are not part of the run's config.</summary>
/// <param name="Resume">null: a new run; "latest": the newest checkpoint of the output dir; else a checkpoint directory.</param>
public sealed record TrainOptions(string? Resume = null);

/// <summary>
/// The QLoRA fine-tuning recipe, as one visible loop (torchtune style): load the base with its linears quantized as
/// they stream in, put LoRA on the target modules, then per optimizer step { reseed; accumulate micro-batches
/// (forward, token-summed loss, backward); clip; AdamW; schedule }, evaluating, checkpointing and stopping early
/// as configured. Every step runs inside its own dispose scope, so memory stays flat however long the run.
/// </summary>
public static class TrainingRun
{
    public const string FinalAdapterDir = "final";
    public const string ResolvedConfigFile = "config.yaml";
    public const string MetricsFile = "metrics.csv";
    public const string LossCurveFile = "loss.png";
    const string OptimizerFile = "optimizer.safetensors";
    const string AdapterSubdir = "adapter";

    public static TrainResult Run(TrainConfig config, TrainOptions options, ITrainingObserver observer, CancellationToken cancel)
    {
        var t = config.Training;
        string outDir = config.Output.Dir;
        var store = new CheckpointStore(outDir, config.Output.KeepLast);
        string? resumeFrom = ResolveResume(options.Resume, store, outDir);
        GuardOutputDir(outDir, store, resumeFrom);
        Directory.CreateDirectory(outDir);
        WriteAtomically(Path.Combine(outDir, ResolvedConfigFile), config.ToYaml());

        // ---- data ----
        var tokenizer = LlamaSentencePieceTokenizer.Load(config.Model.Path);
        var data = TrainingData.Build(config.Data, tokenizer, t.Seed);

        // ---- model: quantize-on-load, then LoRA ----
        var device = DeviceChoice.Resolve(config.Model.Device.ToString().ToLowerInvariant(), "model.device");
        var compute = DTypes.ToScalar(config.Quantization.ComputeDtype);
        var frozen = DTypes.ToScalar(config.Model.Dtype);
        var spec = BaseFormat(config.Quantization, frozen);
        var loadClock = Stopwatch.StartNew();
        torch.manual_seed(t.Seed);
        using var model = LlamaLoader.Load(config.Model.Path,
            new LoadOptions(device, compute, LinearPolicies.Quantized(spec, compute, device, frozen), frozen));
        model.Model.GradientCheckpointing = t.GradientCheckpointing;
        var lora = new LoraSettings(config.Lora.R, config.Lora.Alpha, config.Lora.Dropout, config.Lora.Rslora,
            config.Lora.TargetModules, config.Lora.Layers, t.Seed);
        var wrapped = LoraApplier.Apply(model, lora);
        var adapterConfig = AdapterConfig.From(lora, wrapped, config.Model.Path);
        double loadSeconds = loadClock.Elapsed.TotalSeconds;

        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        var optimizer = new AdamW(trainable.Select(p => (p.name, (Tensor)p.parameter)),
            t.LearningRate, t.AdamBeta1, t.AdamBeta2, t.AdamEpsilon, t.WeightDecay);
        var state = TrainerState.Start;
        if (resumeFrom != null) state = LoadCheckpoint(resumeFrom, model, adapterConfig, optimizer);

        var batches = new BatchStream(data, t.MicroBatchSize, state.Epoch, state.MicroBatch);
        int totalSteps = t.TotalSteps(batches.PerEpoch);
        var schedule = new LrSchedule(DTypes.Name(t.Scheduler), t.LearningRate, t.Warmup(totalSteps), totalSteps);
        var metrics = new MetricsLog(Path.Combine(outDir, MetricsFile), state.Step);
        long baseBytes = model.named_modules().Select(m => m.module).OfType<FrozenLinear>().Sum(f => f.StorageBytes);
        observer.OnStart(new RunSummary(config.Model.Path, device.ToString(), compute.ToString(), spec.ToString(),
            TrainableParameters.Count(model), data.Stats, totalSteps, state.Step, batches.PerEpoch,
            t.MicroBatchSize * t.GradientAccumulationSteps, loadSeconds, baseBytes, t.LogEvery));
        if (state.Step >= totalSteps)
            observer.OnMessage($"checkpoint is at step {state.Step}, the run has {totalSteps} steps: nothing to do");

        // The base model's validation loss, before any step: the "before" of the run's before/after.
        double? initialValidation = null;
        if (state.Step == 0 && data.Validation.Count > 0 && totalSteps > 0)
        {
            initialValidation = Evaluate(model, data, t.MicroBatchSize, device);
            observer.OnEvaluation(0, initialValidation.Value, false);
        }

        // ---- eval: section -> TaskEvaluation (benchmark tasks) before training, at eval_every and at the end ----
        var tasks = config.EvalTasks;
        var taskTokenizer = tasks.Tasks.Count > 0 ? LlamaTextTokenizer.Load(config.Model.Path) : null;
        var modelConfig = taskTokenizer != null ? LlamaConfig.Load(config.Model.Path) : null;
        IReadOnlyDictionary<string, double>? initialTasks = null, lastTasks = null;
        IReadOnlyDictionary<string, double> ScoreTasks() =>
            TaskEvaluation.Run(model, taskTokenizer!, modelConfig!.MaxPositionEmbeddings, modelConfig.EosTokenIds, tasks, cancel);
        if (taskTokenizer != null && state.Step == 0 && totalSteps > 0)
            observer.OnMessage($"tasks step     0  {TaskEvaluation.Describe(initialTasks = ScoreTasks())}  (base model, before training)");
        // ---- end eval: section ----

        var clock = Stopwatch.StartNew();
        double elapsedBefore = metrics.Rows.LastOrDefault()?.ElapsedSeconds ?? 0;
        var stop = TrainStop.Completed;
        string? stopMessage = null;
        int? bestStep = null;
        model.train();

        for (int step = state.Step; step < totalSteps; step++)
        {
            if (cancel.IsCancellationRequested)
            {
                stop = TrainStop.Interrupted;
                break;
            }
            var stepClock = Stopwatch.StartNew();
            double loss, gradNorm, lr = schedule.At(step);
            long inputTokens = 0, countedTokens;
            using (var stepScope = torch.NewDisposeScope())
            {
                // Reseeding from (seed, step) makes dropout masks a function of the step alone: a resumed run draws
                // exactly what the uninterrupted one did, with no generator state in the checkpoint.
                torch.manual_seed(StepSeed(t.Seed, step));
                optimizer.LearningRate = lr;
                var micro = Enumerable.Range(0, t.GradientAccumulationSteps).Select(_ => batches.Next()).ToList();
                countedTokens = Math.Max(1, micro.Sum(TokenLoss.Counted));
                double lossSum = 0;
                foreach (var batch in micro)
                {
                    using var microScope = torch.NewDisposeScope();
                    var x = batch.ToTensors(device);
                    var logits = model.forward(x.InputIds, x.PositionIds, batch.IsPacked ? x.AttentionMask : null, null);
                    var sum = CausalLmLoss.Sum(logits, x.Labels);
                    (sum / countedTokens).backward();
                    BackwardHandles.Release();
                    lossSum += sum.item<float>();
                    inputTokens += (long)batch.Rows * batch.Length;
                }
                loss = lossSum / countedTokens;
                if (!double.IsFinite(loss))
                {
                    stop = TrainStop.NonFiniteLoss;
                    stopMessage = $"loss is {loss} at step {step + 1}; stopped without saving it. Last good checkpoint: "
                        + (store.Latest() ?? "none") + ". Lower training.learning_rate or raise training.warmup_steps, then --resume";
                    break;
                }
                // clip_grad_norm_ with max_norm 0 would zero the gradients; infinity only measures.
                gradNorm = nn.utils.clip_grad_norm_(trainable.Select(p => p.parameter), t.MaxGradNorm > 0 ? t.MaxGradNorm : double.PositiveInfinity);
                optimizer.StepOnce();
                optimizer.ZeroGrad();
            }
            state = state with
            {
                Step = step + 1, Epoch = batches.Epoch, MicroBatch = batches.MicroBatch,
                TokensSeen = state.TokensSeen + inputTokens, LastLoss = loss,
            };

            double stepSeconds = stepClock.Elapsed.TotalSeconds;
            double elapsed = elapsedBefore + clock.Elapsed.TotalSeconds;
            double rate = (step + 1 - (metrics.Rows.Count > 0 ? metrics.Rows[0].Step - 1 : 0)) / Math.Max(1e-9, elapsed);
            var m = new StepMetrics(step + 1, totalSteps, batches.Progress, loss, lr, gradNorm, inputTokens,
                inputTokens / Math.Max(1e-9, stepSeconds), stepSeconds, elapsed, (totalSteps - step - 1) / Math.Max(1e-9, rate),
                Environment.WorkingSet);
            metrics.Append(new MetricsLog.Row(m.Step, m.Epoch, loss, null, lr, gradNorm, inputTokens, m.TokensPerSecond,
                stepSeconds, elapsed, Environment.WorkingSet / 1048576.0));
            observer.OnStep(m);

            bool last = step + 1 == totalSteps;
            if (data.Validation.Count > 0 && ((t.EvalEvery > 0 && (step + 1) % t.EvalEvery == 0) || last))
            {
                double val = Evaluate(model, data, t.MicroBatchSize, device);
                metrics.SetValidationLoss(step + 1, val);
                bool best = state.BestValidationLoss is null || val < state.BestValidationLoss;
                state = best
                    ? state with { BestValidationLoss = val, EvaluationsWithoutImprovement = 0 }
                    : state with { EvaluationsWithoutImprovement = state.EvaluationsWithoutImprovement + 1 };
                if (best) bestStep = step + 1;
                observer.OnEvaluation(step + 1, val, best);
                if (t.EarlyStoppingPatience is { } patience && state.EvaluationsWithoutImprovement >= patience)
                {
                    stop = TrainStop.EarlyStopped;
                    stopMessage = $"early stopping: validation loss has not improved for {patience} evaluations (best {state.BestValidationLoss:F4})";
                }
            }
            if (taskTokenizer != null && ((t.EvalEvery > 0 && (step + 1) % t.EvalEvery == 0) || last)) // eval: section
            {
                metrics.SetTaskScores(step + 1, lastTasks = ScoreTasks());
                observer.OnMessage($"tasks step {step + 1,5}  {TaskEvaluation.Describe(lastTasks)}");
            }
            if (stop == TrainStop.Completed && t.SaveEvery > 0 && (step + 1) % t.SaveEvery == 0 && !last)
                observer.OnCheckpoint(step + 1, SaveCheckpoint(store, state, model, adapterConfig, optimizer, bestStep));
            if (stop != TrainStop.Completed) break;
        }

        string? finalAdapter = null;
        if (stop != TrainStop.NonFiniteLoss && state.Step > 0)
        {
            if (!store.List().Any(c => c.Step == state.Step))
                observer.OnCheckpoint(state.Step, SaveCheckpoint(store, state, model, adapterConfig, optimizer, bestStep));
            if (stop != TrainStop.Interrupted)
            {
                finalAdapter = Path.Combine(outDir, FinalAdapterDir);
                AdapterFiles.Save(finalAdapter, model, adapterConfig);
            }
        }
        if (metrics.Rows.Count > 0)
        {
            try { LossCurve.Write(Path.Combine(outDir, LossCurveFile), metrics.Rows, $"{Path.GetFileName(Path.GetFullPath(config.Model.Path))} + LoRA r={config.Lora.R}"); }
            catch (Exception e) { observer.OnMessage($"could not draw {LossCurveFile}: {e.Message}"); }
        }
        if (stop == TrainStop.Interrupted) stopMessage = $"interrupted at step {state.Step}; resume with --resume";
        return new TrainResult(outDir, finalAdapter, state.Step, state.LastLoss, state.BestValidationLoss, stop, stopMessage, initialValidation,
            lastTasks, initialTasks);
    }

    /// <summary>Mean next-token loss over the validation sequences (no dropout, no graph).</summary>
    public static double Evaluate(LlamaForCausalLM model, TrainingData data, int microBatchSize, Device device)
    {
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            double sum = 0;
            long count = 0;
            foreach (var batch in data.ValidationBatches(microBatchSize))
            {
                using var scope = torch.NewDisposeScope();
                var x = batch.ToTensors(device);
                var logits = model.forward(x.InputIds, x.PositionIds, batch.IsPacked ? x.AttentionMask : null, null);
                sum += CausalLmLoss.Sum(logits, x.Labels).item<float>();
                count += TokenLoss.Counted(batch);
            }
            return count == 0 ? double.NaN : sum / count;
        }
        finally
        {
            model.train();
        }
    }

    static long StepSeed(int seed, int step) => ((long)seed << 24) ^ (step * 1_000_003L + 17);

    static string SaveCheckpoint(CheckpointStore store, TrainerState state, LlamaForCausalLM model, AdapterConfig adapterConfig,
        AdamW optimizer, int? bestStep) =>
        store.Save(state.Step, state, (dir, written) =>
        {
            AdapterFiles.Save(Path.Combine(dir, AdapterSubdir), model, adapterConfig);
            written(Path.Combine(dir, AdapterSubdir));
            var (tensors, step) = optimizer.Save();
            SafeTensors.Write(Path.Combine(dir, OptimizerFile), tensors, new Dictionary<string, string> { ["step"] = step.ToString() });
            foreach (var tensor in tensors.Values) tensor.Dispose();
            written(Path.Combine(dir, OptimizerFile));
        }, bestStep);

    static TrainerState LoadCheckpoint(string dir, LlamaForCausalLM model, AdapterConfig adapterConfig, AdamW optimizer)
    {
        var state = TrainerState.Load(dir);
        AdapterFiles.LoadWeights(Path.Combine(dir, AdapterSubdir), model, adapterConfig);
        using var f = SafeTensorsFile.Open(Path.Combine(dir, OptimizerFile));
        var tensors = f.Names.ToDictionary(n => n, n => f.Read(n));
        long step = long.Parse(f.Metadata.GetValueOrDefault("step") ?? state.Step.ToString());
        optimizer.Load(tensors, step);
        foreach (var tensor in tensors.Values) tensor.Dispose();
        return state;
    }

    static string? ResolveResume(string? resume, CheckpointStore store, string outDir)
    {
        if (resume is null) return null;
        if (resume == "latest")
            return store.Latest() ?? throw new InvalidOperationException($"--resume: no complete checkpoint under {store.Root}; start without --resume");
        if (!Directory.Exists(resume)) throw new DirectoryNotFoundException($"--resume: checkpoint directory '{resume}' does not exist");
        if (!File.Exists(Path.Combine(resume, TrainerState.FileName)))
            throw new InvalidDataException($"--resume: '{resume}' is not a complete checkpoint (no {TrainerState.FileName}); use one of {store.Root}/step-N");
        return resume;
    }

    /// <summary>A new run never writes over an earlier run's checkpoints: they are resumed or kept.</summary>
    static void GuardOutputDir(string outDir, CheckpointStore store, string? resumeFrom)
    {
        if (resumeFrom != null) return;
        if (store.List().Count > 0 || Directory.Exists(Path.Combine(outDir, FinalAdapterDir)))
            throw new InvalidOperationException(
                $"output dir '{outDir}' holds an earlier run's checkpoints; pass --resume to continue it, or set output.dir to a new directory (or delete it)");
    }

    static QuantSpec BaseFormat(QuantizationConfig q, ScalarType denseDType) => q.Type switch
    {
        QuantType.Nf4 => new FourBitSpec(FourBitType.Nf4, q.BlockSize, q.DoubleQuant),
        QuantType.Fp4 => new FourBitSpec(FourBitType.Fp4, q.BlockSize, q.DoubleQuant),
        QuantType.Int8 => QuantSpec.Parse("int8"),
        QuantType.Int4 => QuantSpec.Parse($"int4-g{q.BlockSize}"),
        _ => new DenseSpec(denseDType),
    };

    static void WriteAtomically(string path, string text)
    {
        File.WriteAllText(path + ".tmp", text);
        File.Move(path + ".tmp", path, overwrite: true);
    }
}
