using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using QLoraNet.Distributed;
using QLoraNet.Kernels.Cuda;
using QLoraNet.Models;
using QLoraNet.Peft;
using QLoraNet.Kernels;
using QLoraNet.Quant;
using QLoraNet.Quant.Kernels;
using QLoraNet.Training.Data;
using QLoraNet.Training.Losses;
using QLoraNet.Training.Optim;
using QLoraNet.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace QLoraNet.Cli;

/// <summary>
/// `bench train`: QLoRA training steps on a real-size checkpoint, timed after warm-up, in the same shape as the peer
/// benchmark (random token batches, LoRA on the targets, AdamW, bf16 compute, per-layer checkpointing). The step is
/// `train`'s own (<see cref="TrainStep.Launch"/>: accumulation, the token-mean loss, clipping, AdamW) with only the data
/// source swapped for random tokens (<see cref="RandomTokenBatches"/>). Prints one JSON line. Peak device memory is measured outside the process (nvidia-smi sampling, scripts/gpu/bench_7b.sh), the
/// same way as the peer's NVML figure; the line also has the caching allocator's allocated and reserved peaks over
/// the warm-up and timed steps (model weights included; <see cref="CudaAllocatorStats"/>), as the peer's
/// torch.cuda.max_memory_allocated / max_memory_reserved, or why they could not be read. With --split, the step is divided into dequantization (by ablation: the same
/// step on a dense bf16 base), attention and matmuls (each timed alone at the step's shapes), and the rest. With
/// --profile, a few more steps run with their phases marked (<see cref="StepProfiler"/>: device and host time of
/// forward, recomputation, backward and optimizer from CUDA events), inside a profiler-API capture range for an
/// outside `nsys --capture-range=cudaProfilerApi`, and the calls each fused op's kernel and reference served.
/// Data-parallel: `--gpus N` (or torchrun) runs one rank per GPU, each with the same per-GPU micro-batch and
/// accumulation, through the same step with the replicas' gradient sum; rank 0 prints world_size and the cluster's
/// tokens/s (all ranks' tokens over rank 0's wall time, which waits for the slowest rank at every step).
/// </summary>
public static class BenchTrainCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face Llama directory (e.g. from make_random_llama.py)", Required = true };
        var seq = new Option<int>("--seq") { DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 4 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 3 };
        var r = new Option<int>("--r") { DefaultValueFactory = _ => 16 };
        var targets = new Option<string>("--targets") { DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj" };
        var format = new Option<string>("--quantization") { DefaultValueFactory = _ => "nf4-dq" };
        var noCkpt = new Option<bool>("--no-ckpt");
        var split = new Option<bool>("--split") { Description = "also measure where the step time goes" };
        var hold = new Option<double>("--hold-seconds") { Description = "sleep after the timed steps (lets an outside sampler see the peak)", DefaultValueFactory = _ => 1.0 };
        var accum = new Option<int>("--grad-accum") { Description = "micro-batches per optimizer step (training.gradient_accumulation_steps)", DefaultValueFactory = _ => 1 };
        var clip = new Option<double>("--max-grad-norm") { Description = "gradient clipping (training.max_grad_norm; 0 = measure only)", DefaultValueFactory = _ => 0.3 };
        var dropout = new Option<double>("--dropout") { Description = "LoRA dropout (lora.dropout; 0 as in the peer benchmark)", DefaultValueFactory = _ => 0.0 };
        var device = new Option<string>("--device") { Description = "cuda, or cpu for a quick check on a small model", DefaultValueFactory = _ => "cuda" };
        var gpus = new Option<int>("--gpus") { Description = "data-parallel ranks on this host (one per GPU; torchrun works too)", DefaultValueFactory = _ => 1 };
        var hostEmbedding = new Option<bool>("--embedding-on-host") { Description = "the token-embedding table in pinned host memory, rows gathered onto the GPU (training.embedding_on_host)" };
        var hostOptimizer = new Option<bool>("--optimizer-on-host") { Description = "AdamW's moments in pinned host memory, paged through a small device window for each update (training.optimizer_on_host)" };
        var hostCheckpoints = new Option<bool>("--checkpoints-on-host") { Description = "the recomputed layers' inputs in host memory from forward to backward (training.checkpoints_on_host)" };
        var torchCe = new Option<bool>("--torch-cross-entropy") { Description = "the loss's torch ops on fp32 logits instead of the fused in-place kernel (for comparisons)" };
        var profile = new Option<bool>("--profile") { Description = "also profile a few steps by phase (CUDA events; capture range for nsys)" };
        var profileSteps = new Option<int>("--profile-steps") { Description = "steps --profile runs", DefaultValueFactory = _ => 3 };
        var chunkLogits = new Option<long>("--logits-per-chunk") { Description = "logits per chunk of the loss (less: lower peak memory)", DefaultValueFactory = _ => ChunkedCrossEntropy.DefaultLogitsPerChunk };
        var layerBackward = new Option<string>("--layer-backward")
        {
            Description = "checkpointed layers' backward: explicit (no autograd graph in the recomputation, dense weights kept for backward), explicit-no-keep (dequantize again in backward, gate and up one at a time), autograd (the reference)",
            DefaultValueFactory = _ => "explicit",
        };
        layerBackward.AcceptOnlyFromAmong("explicit", "explicit-no-keep", "autograd");
        var kept = new Option<int>("--uncheckpointed-layers")
        {
            Description = "with checkpointing, the last layers that keep their activations instead of being recomputed (training.uncheckpointed_layers)",
            DefaultValueFactory = _ => 1,
        };
        var checkLayers = new Option<bool>("--check-layer-backward")
        {
            Description = "before timing, compare the adapters' gradients of one micro-batch through the explicit layer backward with the autograd recomputation's (and autograd's with itself: the device's own run-to-run spread)",
        };
        var cmd = new Command("train", "time QLoRA training steps (train's step, random tokens) on a real-size model (CUDA)");
        foreach (var o in new Option[] { model, seq, batch, steps, warmup, r, targets, format, noCkpt, split, hold, accum, clip, dropout, device, profile, profileSteps, chunkLogits, gpus, layerBackward, checkLayers, kept, torchCe, hostEmbedding, hostOptimizer, hostCheckpoints })
            cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            int ranks = pr.GetValue(gpus);
            if (ranks < 1) throw new ArgumentException($"--gpus {ranks}: must be at least 1");
            if (ranks > 1 && pr.GetValue(split)) throw new ArgumentException("--split times one GPU's step: drop --gpus");
            if (ranks > 1)
            {
                var args = pr.Tokens.Where(t => t.Type != System.CommandLine.Parsing.TokenType.Command).Select(t => t.Value).ToList();
                int i = args.IndexOf("--gpus");
                args.RemoveRange(i, 2);
                return DistributedLaunch.Launch(["bench", "train", .. args], ranks, stdout, pr.InvocationConfiguration.Error);
            }
            var dist = DistributedEnvironment.FromProcess();
            if (dist.IsDistributed) DistributedLaunch.AttachChild(dist, pr.InvocationConfiguration.Error);
            if (dist.IsDistributed && pr.GetValue(split)) throw new ArgumentException("--split times one GPU's step: run it without a launcher");
            LibTorchProbe.EnsureLoaded();
            var dev = DeviceChoice.Resolve(pr.GetValue(device)!, "--device");
            if (pr.GetValue(split) && dev.type != DeviceType.CUDA) throw new InvalidOperationException("--split needs --device cuda");
            using var replicas = DistributedLaunch.JoinAsReplica(dist, dev, "bench train", string.Join(" ", pr.Tokens.Select(t => t.Value)));
            dev = replicas?.Group.Device ?? dev;
            IReplicaGroup group = replicas?.Group ?? (IReplicaGroup)SingleReplica.Instance;
            var spec = BaseFormat.Parse(pr.GetValue(format)!);
            if (pr.GetValue(profile) && dev.type != DeviceType.CUDA) throw new InvalidOperationException("--profile needs --device cuda");
            if (pr.GetValue(chunkLogits) < 1) throw new ArgumentException($"--logits-per-chunk {pr.GetValue(chunkLogits)}: must be at least 1");
            if (pr.GetValue(kept) < 0) throw new ArgumentException($"--uncheckpointed-layers {pr.GetValue(kept)}: must be 0 or more");
            var shape = new Shape(pr.GetValue(seq), pr.GetValue(batch), pr.GetValue(r), pr.GetValue(targets)!.Split(','), !pr.GetValue(noCkpt),
                pr.GetValue(accum), pr.GetValue(clip), pr.GetValue(dropout), pr.GetValue(chunkLogits), pr.GetValue(kept), pr.GetValue(torchCe), pr.GetValue(hostEmbedding),
                pr.GetValue(hostOptimizer), pr.GetValue(hostCheckpoints));
            var loadClock = Stopwatch.StartNew();
            var dropoutRandom = new RandomStream();
            using var built = Load(pr.GetValue(model)!, spec, shape, dev, dropoutRandom);
            var llama = built.Model;
            double loadS = loadClock.Elapsed.TotalSeconds;
            var layers = llama.modules().OfType<LlamaDecoderLayer>().ToList();
            string layerMode = pr.GetValue(layerBackward)!;
            UseLayerBackward(layers, layerMode);
            var (step, data) = NewStep(built, shape, dropoutRandom, group);
            using var stepBuffers = step.Step;
            using var moments = step.Optimizer;
            // Its own batch (seed 99): the timed steps see the same batches with and without the check.
            string? layerCheck = pr.GetValue(checkLayers)
                ? JsonSerializer.Serialize(CheckLayerBackward(llama, layers, dropoutRandom,
                    new RandomTokenBatches((int)llama.Architecture.VocabSize, shape.Batch, shape.Seq, seed: 99).Next(), shape, layerMode))
                : null;
            // Opening releases the cache loading left (its self-check's emptyCache, as `train`'s MemoryMonitor does) and
            // resets the peak: loading is not counted.
            var allocator = dev.type == DeviceType.CUDA ? CudaAllocatorStats.Open(dev) : null;
            var callsBefore = built.Kernels.Fused.CallCounts();
            var backwardsBefore = LayerBackwards(layers);
            var decoder = built.Model.modules().OfType<LlamaModel>().Single();
            var copiesBefore = decoder.HostCheckpointCopies?.Done ?? default;
            var (tokS, stepMs, losses, each) = TimeSteps(step, data, built.Model.Device, group, pr.GetValue(steps), pr.GetValue(warmup));
            var calls = CallsPerStep(callsBefore, built.Kernels.Fused.CallCounts(), pr.GetValue(warmup) + pr.GetValue(steps));
            var backwardsAfter = LayerBackwards(layers);
            var copies = (decoder.HostCheckpointCopies?.Done ?? default) - copiesBefore;
            double stepsRun = pr.GetValue(warmup) + pr.GetValue(steps);
            double loss = losses.Count > 0 ? losses[^1] : double.NaN;
            var peaks = allocator?.Stats?.Read();
            var fields = new List<string>
            {
                J("ours", "QLoraNet QLoRA (TorchSharp)"), J("quantization", spec.ToString()), J("seq", shape.Seq), J("batch", shape.Batch),
                J("grad_accum", shape.GradientAccumulation), J("max_grad_norm", shape.MaxGradNorm), J("dropout", shape.Dropout),
                J("ckpt", shape.Checkpointing), J("uncheckpointed_layers", shape.UncheckpointedLayers), J("embedding_on_host", shape.EmbeddingOnHost),
                J("optimizer_on_host", shape.OptimizerOnHost), J("optimizer_window_mib", Math.Round(moments.HostWindow.WindowBytes / 1048576.0, 1)),
                J("optimizer_groups", moments.HostWindow.Groups), J("checkpoints_on_host", shape.CheckpointsOnHost), J("targets", string.Join(",", shape.Targets)), J("r", shape.R),
                J("trainable", TrainableParameters.Count(llama).Trainable), J("load_s", Math.Round(loadS, 1)),
                J("world_size", group.Size), J("tokens_per_s", Math.Round(tokS, 1)), J("tokens_per_s_per_gpu", Math.Round(tokS / group.Size, 1)),
                J("step_ms", Math.Round(stepMs, 1)), J("loss", Math.Round(loss, 4)),
                // Every step's loss, warm-up included, unrounded: runs with the same global batch compare step by step.
                "\"losses\": [" + string.Join(", ", losses.Select(l => l.ToString("R", CultureInfo.InvariantCulture))) + "]",
                // Each timed step's device time, start to next start (idle included), and the collections over them.
                "\"step_device_ms_each\": [" + string.Join(", ", each.StepDeviceMs.Select(v => v.ToString("R", CultureInfo.InvariantCulture))) + "]",
                "\"gc_timed\": " + each.Gc.Json(),
                J("base_gib", Math.Round(llama.named_modules().Select(m => m.module).OfType<FrozenLinear>().Sum(f => f.StorageBytes) / Math.Pow(2, 30), 2)),
                J("logits_per_chunk", shape.LogitsPerChunk), J("adamw_path", FusedOp.Spell(step.Optimizer.LastPath)),
                // The kernel choice (as `train` prints it at the start) and the calls each path served: nothing fell back unseen.
                "\"kernels\": " + JsonSerializer.Serialize(built.Kernels.Report()),
                "\"fused_calls_per_step\": " + JsonSerializer.Serialize(calls),
                // Which backward the checkpointed layers took (ExplicitLayerBackward or the autograd recomputation), per step.
                J("layer_backward", layerMode),
                J("layer_backwards_explicit_per_step", Math.Round((backwardsAfter.Explicit - backwardsBefore.Explicit) / stepsRun, 2)),
                J("layer_backwards_autograd_per_step", Math.Round((backwardsAfter.Autograd - backwardsBefore.Autograd) / stepsRun, 2)),
                J("host_checkpoints_per_step", Math.Round(copies.Stashed / stepsRun, 2)),
                // Of those, brought back while the layer after them ran its backward, and on demand (the first of each pass).
                J("host_checkpoints_ahead_per_step", Math.Round(copies.Ahead / stepsRun, 2)),
                J("host_checkpoints_on_demand_per_step", Math.Round(copies.OnDemand / stepsRun, 2)),
                J("host_checkpoint_pinned_mib", Math.Round((decoder.HostCheckpointCopies?.PinnedBytes ?? 0) / 1048576.0, 1)),
            };
            if (layerCheck is not null) fields.Add("\"layer_backward_check\": " + layerCheck);
            if (peaks is { } p)
            {
                fields.AddRange([J("device_allocated_peak_gib", Math.Round(p.AllocatedPeak / Math.Pow(2, 30), 2)),
                    J("device_reserved_peak_gib", Math.Round(p.ReservedPeak / Math.Pow(2, 30), 2))]);
                // The peaks before the reader opened: loading the model (and the layer check, when asked): an outside
                // sampler's device peak may be this one, not the timed steps'.
                if (allocator!.Before is { } b)
                    fields.AddRange([J("load_allocated_peak_gib", Math.Round(b.AllocatedPeak / Math.Pow(2, 30), 2)),
                        J("load_reserved_peak_gib", Math.Round(b.ReservedPeak / Math.Pow(2, 30), 2))]);
            }
            else if (allocator?.Reason is { } why) fields.Add("\"device_allocator_unavailable\": " + JsonSerializer.Serialize(why));
            string? profiled = pr.GetValue(profile)
                ? JsonSerializer.Serialize(Profile(step, data, built, shape, pr.GetValue(warmup) + pr.GetValue(steps), pr.GetValue(profileSteps), allocator?.Stats))
                : null;
            if (profiled is not null) fields.Add("\"profile\": " + profiled);
            Thread.Sleep(TimeSpan.FromSeconds(pr.GetValue(hold)));
            if (pr.GetValue(split)) fields.AddRange(Split(llama, pr.GetValue(model)!, shape, stepMs, pr.GetValue(steps)));
            if (group.Rank == 0) stdout.WriteLine("{" + string.Join(", ", fields) + "}");
            // The other ranks' step profiles, so that a data-parallel step's phases can be compared across ranks.
            else if (profiled is not null) pr.InvocationConfiguration.Error.WriteLine($"rank {group.Rank} profile: {profiled}");
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// The adapters' gradients of one micro-batch (this run's shape, random tokens) through the explicit layer
    /// backward against the autograd recomputation, on the device and dtype of the run: per gradient tensor, the
    /// largest difference over the tensor's largest entry, and the cosine of the two. Autograd against a second
    /// autograd run gives the floor (cuDNN's attention backward and split-K GEMMs are not bitwise repeatable): the
    /// explicit backward should differ from autograd about as much as autograd differs from itself, and a wrong term
    /// would show as a cosine well below 1. Leaves the gradients zeroed and the layers as <paramref name="mode"/> says.
    /// </summary>
    static Dictionary<string, object?> CheckLayerBackward(LlamaForCausalLM model, List<LlamaDecoderLayer> layers, RandomStream dropout,
        Batch batch, Shape shape, string mode)
    {
        var trainable = model.parameters().Where(p => p.requires_grad).ToList();
        var loss = new CausalLmTokenMeanLoss(shape.LogitsPerChunk);
        model.train();
        // B starts at zero, where A gets no gradient: every factor gets small random values for the check (a fixed
        // generator), and its starting values back afterwards.
        var adapters = model.modules().OfType<LoraLinear>().ToList();
        var startB = adapters.Select(l => l.B.detach().clone().DetachFromDisposeScope()).ToList();
        using (no_grad())
        using (var generator = new Generator(7))
            foreach (var l in adapters) l.B.copy_(randn(l.B.shape, generator: generator).mul_(0.01));
        List<Tensor> Gradients(bool explicitly)
        {
            foreach (var layer in layers) layer.ExplicitBackward = explicitly;
            using (no_grad()) foreach (var p in trainable) p.grad?.zero_();
            dropout.Reseed(99);                                    // the same masks in every run
            using (var scope = NewDisposeScope())
            {
                BackwardFailure.Backward(loss.Sum(model, batch));
                model.BackwardHandles.Release();
            }
            // Compared on the host, in fp64: copies on the device would stay in its allocator's cache and in the peak.
            using (no_grad())
            using (var copies = NewDisposeScope())
                return trainable.Select(p => p.grad!.cpu().to(ScalarType.Float64).MoveToOuterDisposeScope().DetachFromDisposeScope()).ToList();
        }
        var autograd1 = Gradients(false);
        var autograd2 = Gradients(false);
        var explicitly = Gradients(true);
        (double MaxRel, double MinCos) Compare(List<Tensor> a, List<Tensor> b)
        {
            double maxRel = 0, minCos = 1;
            for (int i = 0; i < a.Count; i++)
            {
                using var scope = NewDisposeScope();
                double scale = b[i].abs().max().item<double>();
                if (scale == 0) throw new InvalidOperationException($"gradient {i} of the check is zero: the check would compare nothing");
                maxRel = Math.Max(maxRel, (a[i] - b[i]).abs().max().item<double>() / scale);
                double cos = (a[i] * b[i]).sum().item<double>() / Math.Max(a[i].norm().item<double>() * b[i].norm().item<double>(), 1e-300);
                minCos = Math.Min(minCos, cos);
            }
            return (maxRel, minCos);
        }
        var (exRel, exCos) = Compare(explicitly, autograd1);
        var (agRel, agCos) = Compare(autograd2, autograd1);
        foreach (var t in autograd1.Concat(autograd2).Concat(explicitly)) t.Dispose();
        using (no_grad())
            for (int i = 0; i < adapters.Count; i++) adapters[i].B.copy_(startB[i]);
        foreach (var t in startB) t.Dispose();
        using (no_grad()) foreach (var p in trainable) p.grad?.zero_();
        UseLayerBackward(layers, mode);
        return new()
        {
            ["tensors"] = trainable.Count,
            ["explicit_vs_autograd_max_rel_diff"] = Math.Round(exRel, 6), ["explicit_vs_autograd_min_cosine"] = Math.Round(exCos, 8),
            ["autograd_vs_autograd_max_rel_diff"] = Math.Round(agRel, 6), ["autograd_vs_autograd_min_cosine"] = Math.Round(agCos, 8),
        };
    }

    /// <summary>Sets every layer's checkpointed backward as --layer-backward names it.</summary>
    static void UseLayerBackward(List<LlamaDecoderLayer> layers, string mode)
    {
        foreach (var layer in layers)
        {
            layer.ExplicitBackward = mode != "autograd";
            layer.KeepWeightsForBackward = mode == "explicit";
            layer.Mlp.StackFrozenGateUp = mode != "explicit-no-keep";   // as training.keep_dequantized_weights: false sets it
        }
    }

    static (long Explicit, long Autograd) LayerBackwards(List<LlamaDecoderLayer> layers) =>
        (layers.Sum(l => l.BackwardCounts.Explicit), layers.Sum(l => l.BackwardCounts.Autograd));

    sealed record Shape(int Seq, int Batch, int R, string[] Targets, bool Checkpointing, int GradientAccumulation,
        double MaxGradNorm, double Dropout, long LogitsPerChunk, int UncheckpointedLayers, bool TorchCrossEntropy, bool EmbeddingOnHost,
        bool OptimizerOnHost, bool CheckpointsOnHost);

    /// <summary>The model as `train` builds it (<see cref="ModelBuilder"/>), with adapters whose dropout draws from
    /// <paramref name="dropoutRandom"/>, the stream the step reseeds.</summary>
    static BuiltModel Load(string dir, BaseFormat spec, Shape shape, Device device, RandomStream dropoutRandom)
    {
        var compute = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        return ModelBuilder.Build(dir, new ModelBuildOptions(device, compute, spec, KernelChoice.For(device),
            GradientCheckpointing: shape.Checkpointing, UncheckpointedLayers: shape.UncheckpointedLayers, EmbeddingOnHost: shape.EmbeddingOnHost,
            CheckpointsOnHost: shape.CheckpointsOnHost, NewAdapter: new LoraSettings(shape.R, 2 * shape.R, shape.Dropout, false, shape.Targets),
            AdapterSeed: 0, AdapterDropout: dropoutRandom));
    }

    const double LearningRate = 2e-4;

    /// <summary>`train`'s step as the recipe makes it (AdamW and the loss from the run's kernel selection, the
    /// replicas' gradient sum), on random tokens (labels = inputs, as the peer does).</summary>
    static ((TrainStep Step, AdamW Optimizer) Step, RandomTokenBatches Data) NewStep(BuiltModel built, Shape shape, RandomStream dropoutRandom,
        IReplicaGroup replicas)
    {
        var (llama, fused) = (built.Model, built.Kernels.Fused);
        var trainable = llama.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter));
        var optimizer = new AdamW(trainable, LearningRate, kernel: fused.AdamW, momentsOnHost: shape.OptimizerOnHost);
        var loss = new CausalLmTokenMeanLoss(shape.LogitsPerChunk, crossEntropy: shape.TorchCrossEntropy ? null : fused.CrossEntropy);
        var step = new TrainStep(llama, optimizer, loss,
            new TrainStepSettings(shape.GradientAccumulation, shape.MaxGradNorm, Seed: 0), dropoutRandom, replicas);
        return ((step, optimizer), new RandomTokenBatches((int)llama.Architecture.VocabSize, shape.Batch, shape.Seq));
    }

    /// <summary>Warm-up, then timed optimizer steps; tokens/s counts every replica's tokens. Each step's outcome is
    /// read after the next one is launched, as `train` reads them (<see cref="StepInFlight"/>).</summary>
    static (double TokensPerSecond, double StepMs, List<double> Losses, TimedSteps Each) TimeSteps((TrainStep Step, AdamW Optimizer) run, RandomTokenBatches data,
        Device device, IReplicaGroup replicas, int steps, int warmup)
    {
        const double learningRate = LearningRate;
        var step = run.Step;
        bool onCuda = device.type == DeviceType.CUDA;
        var losses = new List<double>();
        for (int i = 0; i < warmup; i++) losses.Add(step.Run(i, learningRate, data).Loss);
        if (onCuda) cuda.synchronize();
        replicas.Barrier();
        using var starts = onCuda ? StepStarts.TryOpen() : null;
        var gc = GcTally.Now();
        var sw = Stopwatch.StartNew();
        long tokens = 0;
        StepInFlight? pending = null;
        for (int i = 0; i <= steps; i++)
        {
            starts?.Mark();
            var launched = i < steps ? step.Launch(warmup + i, learningRate, data) : null;
            if (pending is not null)
            {
                var outcome = pending.Outcome;
                losses.Add(outcome.Loss);
                tokens += outcome.InputTokens;
            }
            pending = launched;
        }
        if (onCuda) cuda.synchronize();
        double s = sw.Elapsed.TotalSeconds;
        return (tokens / s, s / steps * 1000, losses, new TimedSteps(starts?.IntervalsMs() ?? [], GcTally.Now() - gc));
    }

    /// <summary>What the timed steps were made of: each step's device time from its start to the next one's (idle
    /// gaps included, so a slow step shows as one long interval rather than a higher mean) and the .NET collections
    /// and pause time over them (the host issues a step's kernels; a pause it cannot hide shows on the device).</summary>
    internal sealed record TimedSteps(IReadOnlyList<double> StepDeviceMs, GcTally Gc);

    /// <summary>Garbage collections by generation and the runtime's total pause time, at a moment or between two.</summary>
    internal readonly record struct GcTally(int Gen0, int Gen1, int Gen2, double PauseMs)
    {
        public static GcTally Now() =>
            new(GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2), GC.GetTotalPauseDuration().TotalMilliseconds);

        public static GcTally operator -(GcTally a, GcTally b) => new(a.Gen0 - b.Gen0, a.Gen1 - b.Gen1, a.Gen2 - b.Gen2, a.PauseMs - b.PauseMs);

        public string Json() => $"{{\"gen0\": {Gen0}, \"gen1\": {Gen1}, \"gen2\": {Gen2}, \"pause_ms\": {Math.Round(PauseMs, 1).ToString(CultureInfo.InvariantCulture)}}}";
    }

    /// <summary>A timing event recorded on stream 0 as each step starts to be issued (and once after the last), so
    /// the device's time per step can be read after the run without a wait inside it. Null where the driver API is
    /// not reachable.</summary>
    sealed class StepStarts : IDisposable
    {
        readonly List<CudaDriver.Event> _marks = [];

        public static StepStarts? TryOpen()
        {
            var starts = new StepStarts();
            try
            {
                starts.Mark();
                starts._marks[0].Dispose();
                starts._marks.Clear();
                return starts;
            }
            catch (Exception e) when (e is InvalidOperationException or DllNotFoundException or EntryPointNotFoundException)
            {
                starts.Dispose();
                return null;
            }
        }

        public void Mark()
        {
            var e = new CudaDriver.Event();
            try { e.Record(); }
            catch { e.Dispose(); throw; }
            _marks.Add(e);
        }

        /// <summary>Milliseconds between consecutive marks; call after the device has passed the last one.</summary>
        public List<double> IntervalsMs() =>
            [.. Enumerable.Range(1, Math.Max(0, _marks.Count - 1)).Select(i => Math.Round(_marks[i].MillisecondsSince(_marks[i - 1]), 2))];

        public void Dispose()
        {
            foreach (var e in _marks) e.Dispose();
            _marks.Clear();
        }
    }

    /// <summary>
    /// <paramref name="count"/> more steps (numbered from <paramref name="first"/>) with their phases marked, inside a
    /// profiler-API capture range, each read after the next is launched as in <see cref="TimeSteps"/>; the per-step
    /// means by phase and the calls each fused op's paths served in them.
    /// </summary>
    static Dictionary<string, object?> Profile((TrainStep Step, AdamW Optimizer) s, RandomTokenBatches data, BuiltModel built, Shape shape,
        int first, int count, CudaAllocatorStats? allocator)
    {
        var before = built.Kernels.Fused.CallCounts();
        using var profiler = new StepProfiler(allocator);
        s.Step.Phases = profiler;
        cuda.synchronize();
        string? rangeError = CudaDriver.ProfilerRange(on: true);
        var clock = Stopwatch.StartNew();
        try
        {
            StepInFlight? pending = null;
            for (int i = 0; i < count; i++)
            {
                var launched = s.Step.Launch(first + i, LearningRate, data);
                profiler.EndStep(leaveInFlight: 1);
                _ = pending?.Outcome;
                pending = launched;
            }
            _ = pending?.Outcome;
            profiler.Flush();
        }
        finally
        {
            cuda.synchronize();
            rangeError ??= CudaDriver.ProfilerRange(on: false);
            s.Step.Phases = null;
        }
        double wallMs = clock.Elapsed.TotalMilliseconds / Math.Max(1, count);
        var summary = profiler.Summary();
        summary["step_wall_ms"] = Math.Round(wallMs, 2);
        summary["tokens_per_s"] = Math.Round((long)shape.Batch * shape.Seq * shape.GradientAccumulation / (wallMs / 1000), 1);
        summary["fused_calls_per_step"] = CallsPerStep(before, built.Kernels.Fused.CallCounts(), count);
        summary["kernels"] = built.Kernels.Report();
        if (rangeError is not null) summary["profiler_range_error"] = rangeError;
        return summary;
    }

    /// <summary>The calls each fused op's kernel and reference served per step between two tallies.</summary>
    static Dictionary<string, object?> CallsPerStep(IReadOnlyDictionary<string, (long Kernel, long Reference)> before,
        IReadOnlyDictionary<string, (long Kernel, long Reference)> after, int steps) =>
        after.ToDictionary(kv => kv.Key, kv => (object?)new Dictionary<string, double>
        {
            ["kernel"] = (kv.Value.Kernel - before[kv.Key].Kernel) / (double)Math.Max(1, steps),
            ["reference"] = (kv.Value.Reference - before[kv.Key].Reference) / (double)Math.Max(1, steps),
        });

    /// <summary>Where a step's time goes, measured piece by piece at the step's shapes.</summary>
    static IEnumerable<string> Split(LlamaForCausalLM nf4, string dir, Shape shape, double stepMs, int steps)
    {
        var layers = nf4.Model.Layers;
        int nLayers = layers.Count;
        var attn = layers[0].SelfAttn;
        long tokens = (long)shape.Batch * shape.Seq;   // per micro-batch; the parts below are per micro-batch too
        // Passes over each layer per step: forward, the checkpoint's recomputation, backward (about 2 forwards of work).
        int forwardPasses = shape.Checkpointing ? 2 : 1;

        // Dequantization: every frozen 4-bit weight is dequantized once per forward pass and once in backward.
        var fourBit = nf4.named_modules().Select(m => m.module).OfType<FourBitLinear>().ToList();
        double dequantMs = TimeMs(5, () =>
        {
            foreach (var f in fourBit) f.DequantizeWeight(ScalarType.BFloat16).Dispose();
        }) * (forwardPasses + 1);

        // Attention (SDPA, causal, flash kernel) forward and backward at (B, heads, T, headDim).
        double attnMs;
        using (var scope = NewDisposeScope())
        {
            var q = randn(new long[] { shape.Batch, attn.NumHeads, shape.Seq, attn.HeadDim }, ScalarType.BFloat16, CUDA).requires_grad_(true);
            var k = randn(q.shape, ScalarType.BFloat16, CUDA).requires_grad_(true);
            var v = randn(q.shape, ScalarType.BFloat16, CUDA).requires_grad_(true);
            var g = randn(q.shape, ScalarType.BFloat16, CUDA);
            double fwd = TimeMs(10, () => { using var s2 = NewDisposeScope(); using var _ = no_grad(); F.scaled_dot_product_attention(q, k, v, is_casual: true); });
            double fwdBwd = TimeMs(10, () => { using var s2 = NewDisposeScope(); F.scaled_dot_product_attention(q, k, v, is_casual: true).backward(new[] { g }); });
            attnMs = nLayers * (fwd * (forwardPasses - 1) + fwdBwd);
        }

        // Matmuls of the frozen linears (dense bf16 weights of the same shapes): x @ W^T per forward pass, dY @ W in backward.
        double matmulMs;
        using (var scope = NewDisposeScope())
        {
            var shapes = fourBit.Take(fourBit.Count / nLayers).Select(f => (f.InFeatures, f.OutFeatures)).ToList();
            double perLayer = 0;
            foreach (var (inF, outF) in shapes)
            {
                var x = randn(new long[] { tokens, inF }, ScalarType.BFloat16, CUDA);
                var w = randn(new long[] { outF, inF }, ScalarType.BFloat16, CUDA);
                var dy = randn(new long[] { tokens, outF }, ScalarType.BFloat16, CUDA);
                perLayer += TimeMs(10, () => F.linear(x, w).Dispose()) * forwardPasses + TimeMs(10, () => dy.matmul(w).Dispose());
            }
            var head = nf4.LmHead;
            double headMs = 0;
            if (head is not null)
            {
                var x = randn(new long[] { tokens, head.InFeatures }, ScalarType.BFloat16, CUDA);
                var w = randn(new long[] { head.OutFeatures, head.InFeatures }, ScalarType.BFloat16, CUDA);
                headMs = 2 * TimeMs(10, () => F.linear(x, w).Dispose());
            }
            matmulMs = perLayer * nLayers + headMs;
        }
        // Each part above is per micro-batch; a step runs GradientAccumulation of them.
        int micro = shape.GradientAccumulation;
        (dequantMs, attnMs, matmulMs) = (dequantMs * micro, attnMs * micro, matmulMs * micro);
        double rest = stepMs - dequantMs - attnMs - matmulMs;
        return new[]
        {
            J("split_dequant_ms", Math.Round(dequantMs, 1)), J("split_attention_ms", Math.Round(attnMs, 1)),
            J("split_matmul_ms", Math.Round(matmulMs, 1)), J("split_rest_ms", Math.Round(rest, 1)),
        };
    }

    static double TimeMs(int iters, Action a)
    {
        a();
        cuda.synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iters; i++) a();
        cuda.synchronize();
        return sw.Elapsed.TotalMilliseconds / iters;
    }

    static string J(string k, object v) => $"\"{k}\": " + v switch
    {
        string s => "\"" + s + "\"",
        bool b => b ? "true" : "false",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString(),
    };
}
