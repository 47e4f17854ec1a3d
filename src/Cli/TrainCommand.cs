using System.CommandLine;
using System.Globalization;
using QLoraNet.Distributed;
using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using Spectre.Console;

namespace QLoraNet.Cli;

/// <summary>
/// `train CONFIG [key=value ...] [--resume | --resume-from DIR] [--resume-with-changes] [--gpus N]`: the QLoRA
/// fine-tuning job. `--resume` takes no value (the newest checkpoint of output.dir), so a following `key=value` is
/// always an override; a checkpoint directory is named with `--resume-from`. Ctrl-C or SIGTERM finishes the current
/// step, saves a checkpoint and exits 130 or 143 (<see cref="StopSignals"/>); a second signal aborts at once.
/// `--gpus N` (N &gt; 1) runs N data-parallel ranks of this command on this host (docs/DISTRIBUTED.md), passing the
/// signals on to them; a rank (RANK/WORLD_SIZE set, by --gpus or torchrun) continues into the run.
/// </summary>
public static class TrainCommand
{
    public static Command Create(TextWriter stdout)
    {
        var config = new Argument<string>("config") { Description = "YAML config file, e.g. configs/quickstart.yaml" };
        var overrides = new Argument<string[]>("overrides") { Description = "section.key=value overrides, e.g. training.learning_rate=1e-4", Arity = ArgumentArity.ZeroOrMore };
        var resume = new Option<bool>("--resume") { Description = "continue from the newest complete checkpoint in output.dir" };
        var resumeFrom = new Option<string?>("--resume-from") { Description = "continue from this checkpoint directory (output.dir/checkpoints/step-N)" };
        var resumeWithChanges = new Option<bool>("--resume-with-changes")
        {
            Description = "resume even if the config changed in keys that break exact resume (learning rate, data, LoRA shape, ...); the changes are logged and the new config recorded beside the checkpoints",
        };
        var gpus = new Option<int>("--gpus")
        {
            Description = "data-parallel on N GPUs of this host: starts N ranks of this command (torchrun works too; docs/DISTRIBUTED.md)",
            DefaultValueFactory = _ => 1,
        };
        var preview = new Option<int?>("--preview")
        {
            Description = "load only the tokenizer and data, print the first N rows with the trained tokens marked and the truncation/packing figures, and exit",
        };
        var cmd = new Command("train", "QLoRA fine-tuning from a YAML config");
        cmd.Arguments.Add(config);
        cmd.Arguments.Add(overrides);
        foreach (var o in new Option[] { resume, resumeFrom, resumeWithChanges, gpus, preview }) cmd.Options.Add(o);
        cmd.SetAction(pr =>
        {
            int ranks = pr.GetValue(gpus);
            if (ranks < 1) throw new ArgumentException($"--gpus {ranks}: must be at least 1");
            var cfg = TrainConfig.Load(pr.GetValue(config)!, pr.GetValue(overrides) ?? []);
            if (pr.GetValue(preview) is { } rows)
            {
                if (rows < 0) throw new ArgumentException($"--preview must be >= 0 rows, got {rows}");
                DataPreviewPrinter.Print(cfg, rows, stdout, colour: ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected);
                return 0;
            }
            string? from = pr.GetValue(resumeFrom);
            if (from is not null && pr.GetValue(resume)) throw new ArgumentException("--resume and --resume-from: give one (--resume = the newest checkpoint of output.dir)");
            if (pr.GetValue(resumeWithChanges) && from is null && !pr.GetValue(resume))
                throw new ArgumentException("--resume-with-changes applies to a resume; add --resume or --resume-from DIR");
            string? resumeArg = from ?? (pr.GetValue(resume) ? "latest" : null);
            if (ranks > 1)
            {
                // The config was checked once here; each rank runs this verb again without --gpus.
                string[] rankArgs = ["train", pr.GetValue(config)!, .. pr.GetValue(overrides) ?? [],
                    .. from is not null ? new[] { "--resume-from", from } : pr.GetValue(resume) ? ["--resume"] : [],
                    .. pr.GetValue(resumeWithChanges) ? new[] { "--resume-with-changes" } : [],
                    .. pr.GetValue(CliApp.Verbose) ? new[] { "--verbose" } : []];
                return DistributedLaunch.Launch(rankArgs, ranks, stdout, pr.InvocationConfiguration.Error);
            }
            var dist = DistributedEnvironment.FromProcess();
            if (dist.IsDistributed) DistributedLaunch.AttachChild(dist, pr.InvocationConfiguration.Error);
            LibTorchProbe.RequireCudaIfAsked(YamlNames.Of(cfg.Model.Device), "model.device");
            var device = QLoraNet.Models.DeviceChoice.Resolve(YamlNames.Of(cfg.Model.Device), "model.device");
            // A rank joins the job before loading anything (NCCL picks its GPU); every rank must run the same config and build.
            using var replicas = DistributedLaunch.JoinAsReplica(dist, device, cfg.ToYaml(), resumeArg ?? "");
            device = replicas?.Group.Device ?? device;
            // One progress display: rank 0's. The other ranks report only errors (to stderr, labelled by the launcher).
            var display = dist.IsRankZero ? stdout : TextWriter.Null;
            using var signals = new StopSignals(display);
            var observer = new ConsoleTrainingObserver(display);
            var result = TrainingRecipes.Run(cfg, new TrainOptions(resumeArg, KernelChoice.For(device), replicas?.Group,
                ResumeWithChanges: pr.GetValue(resumeWithChanges)), observer, signals.Token);
            observer.Finish(result);
            return result.Stop switch
            {
                TrainStop.Interrupted => signals.ExitCode,
                TrainStop.NonFiniteLoss => throw new InvalidOperationException(result.Message),
                _ => 0,
            };
        });
        return cmd;
    }
}

/// <summary>
/// Renders a run: a summary table at start; on a terminal, a live status line rewritten every step; one kept line
/// every training.log_every steps (loss, lr, grad norm, tokens/s, ETA, memory: the host process's peak resident set
/// so far and, on CUDA, the device's used memory at its peak since the previous kept line, device-wide) and for every
/// evaluation, sample generation and checkpoint; at the end the run's memory peaks.
/// </summary>
sealed class ConsoleTrainingObserver(TextWriter stdout) : ITrainingObserver
{
    int logEvery = 1;
    readonly bool live = ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected;
    int liveWidth;
    MemorySample? memorySinceKept;

    public void OnStart(RunSummary s)
    {
        logEvery = Math.Max(1, s.LogEvery);
        var grid = new Grid().AddColumn().AddColumn();
        void Row(string k, string v) => grid.AddRow(new Markup($"[grey]{k}[/]"), new Text(v));
        Row("model", $"{s.ModelPath} on {s.Device}, compute {s.ComputeDType}");
        Row("base", $"{s.BaseFormat}, {s.BaseBytes / 1048576.0:F1} MiB in frozen linears (loaded in {s.LoadSeconds:F1} s)");
        foreach (var line in s.Kernels ?? []) Row("kernel", line);
        Row("parameters", s.Parameters.ToString());
        Row("data", s.Data.Describe());
        Row("steps", $"{s.TotalSteps} x {s.SequencesPerStep} sequences ({s.MicroBatchesPerEpoch} micro-batches per epoch)" + (s.StartStep > 0 ? $", resuming after step {s.StartStep}" : ""));
        Write(grid);
    }

    public void OnStep(StepMetrics m)
    {
        // Kept lines show the peaks since the previous kept line (the metrics have one interval per step).
        if (m.Memory is { } sample) memorySinceKept = memorySinceKept is null ? sample : memorySinceKept.Max(sample);
        string memory = memorySinceKept is { } mem ? Memory(mem) : $"host rss {m.HostRssBytes / 1048576.0:F0} MiB";
        string line = string.Create(CultureInfo.InvariantCulture,
            $"step {m.Step,5}/{m.TotalSteps}  epoch {m.Epoch:F2}  loss {m.Loss:F4}  lr {m.LearningRate:E2}  |g| {m.GradNorm:F3}  {m.TokensPerSecond,7:F0} tok/s  ETA {Eta(m.EtaSeconds)}  {memory}");
        bool keep = m.Step % logEvery == 0 || m.Step == m.TotalSteps || m.Step == 1;
        if (keep) memorySinceKept = null;
        if (live)
        {
            // The status line is rewritten in place; kept lines end with a newline and the next status starts fresh.
            stdout.Write("\r" + line.PadRight(liveWidth) + (keep ? "\n" : ""));
            liveWidth = keep ? 0 : line.Length;
        }
        else if (keep) stdout.WriteLine(line);
    }

    /// <summary>"host peak 1234 MiB  cuda alloc 6.10 / resv 7.02 / used 7.31 GiB": the allocator's allocated and
    /// reserved peaks and the device's used memory, each shown when measured.</summary>
    static string Memory(MemorySample m)
    {
        var cuda = new List<string>();
        if (m.DeviceAllocatedPeakMb is { } a) cuda.Add($"alloc {a / 1024:F2}");
        if (m.DeviceReservedPeakMb is { } r) cuda.Add($"resv {r / 1024:F2}");
        if (m.DeviceUsedPeakMb is { } u) cuda.Add($"used {u / 1024:F2}");
        return string.Create(CultureInfo.InvariantCulture, $"host peak {m.HostPeakRssMb:F0} MiB")
            + (cuda.Count > 0 ? string.Create(CultureInfo.InvariantCulture, $"  cuda {string.Join(" / ", cuda)} GiB") : "");
    }

    void EndLive()
    {
        if (!live || liveWidth == 0) return;
        stdout.Write("\r" + new string(' ', liveWidth) + "\r");
        liveWidth = 0;
    }

    public void OnEvaluation(int step, double validationLoss, bool isBest)
    {
        EndLive();
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"eval  step {step,5}  validation loss {validationLoss:F4}{(step == 0 ? "  (base model, before training)" : isBest ? "  (best)" : "")}"));
    }

    public void OnSamples(IReadOnlyList<SampleGeneration> samples)
    {
        EndLive();
        foreach (var s in samples)
            stdout.WriteLine($"sample step {s.Step,5}  {OneLine(s.Prompt, 60)} -> {OneLine(s.Completion, 100)}");
    }

    static string OneLine(string text, int max)
    {
        string flat = string.Join(" ", text.Split((char[])['\n', '\r'], StringSplitOptions.RemoveEmptyEntries)).Trim();
        return flat.Length <= max ? flat : flat[..(max - 3)] + "...";
    }

    public void OnCheckpoint(int step, string directory)
    {
        EndLive();
        stdout.WriteLine($"saved {directory}");
    }

    public void OnMessage(string message)
    {
        EndLive();
        stdout.WriteLine(message);
    }

    public void Finish(TrainResult r)
    {
        EndLive();
        if (r.Message != null) stdout.WriteLine(r.Message);
        if (r.FinalAdapter != null)
            stdout.WriteLine($"done: {r.StepsDone} steps, last loss {r.LastLoss:F4}" + (r.BestValidationLoss is { } b ? $", best validation loss {b:F4}" + (r.InitialValidationLoss is { } v0 ? $" (base model {v0:F4})" : "") : "")
                + $"; adapter in {r.FinalAdapter}, metrics in {Path.Combine(r.OutputDir, RunOutput.MetricsFile)}"
                // The curve only when it was drawn (a server without the graphics library says why earlier; `plot` draws it elsewhere).
                + (File.Exists(Path.Combine(r.OutputDir, RunOutput.LossCurveFile)) ? $", curve in {Path.Combine(r.OutputDir, RunOutput.LossCurveFile)}" : ""));
        if (r.TaskScores is { Count: > 0 } scores)
            stdout.WriteLine("tasks: " + string.Join(", ", scores.Select(kv => string.Create(CultureInfo.InvariantCulture,
                $"{kv.Key} {kv.Value:F4}{(r.InitialTaskScores?.TryGetValue(kv.Key, out var before) == true ? $" (base model {before:F4})" : "")}"))));
        if (r.PeakMemory is { } p)
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"memory: host peak resident set {p.HostPeakRssMb:F0} MiB")
                + (p.DeviceAllocatedPeakMb is { } a ? string.Create(CultureInfo.InvariantCulture, $", CUDA allocated peak {a / 1024:F2} GiB (in tensors)") : "")
                + (p.DeviceReservedPeakMb is { } v ? string.Create(CultureInfo.InvariantCulture, $", reserved peak {v / 1024:F2} GiB (held by the caching allocator)") : "")
                + (p.DeviceUsedPeakMb is { } d ? string.Create(CultureInfo.InvariantCulture, $", device used at peak {d / 1024:F2} GiB (device-wide: allocator cache, context, other processes)") : "")
                + (r.DeviceAllocatorUnavailable is { } why ? $"; allocated/reserved not reported: {why}" : ""));
    }

    static string Eta(double seconds) => double.IsFinite(seconds) ? TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"h\:mm\:ss") : "-";

    void Write(Spectre.Console.Rendering.IRenderable r)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stdout), ColorSystem = ColorSystemSupport.Detect });
        console.Write(r);
    }
}
