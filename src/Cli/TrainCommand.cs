using System.CommandLine;
using System.Globalization;
using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using Spectre.Console;

namespace QLoraNet.Cli;

/// <summary>
/// `train CONFIG [key=value ...] [--resume [DIR]]`: the QLoRA fine-tuning job. Ctrl-C finishes the current step,
/// saves a checkpoint and exits (130); a second Ctrl-C aborts at once.
/// </summary>
public static class TrainCommand
{
    public static Command Create(TextWriter stdout)
    {
        var config = new Argument<string>("config") { Description = "YAML config file, e.g. configs/quickstart.yaml" };
        var overrides = new Argument<string[]>("overrides") { Description = "section.key=value overrides, e.g. training.learning_rate=1e-4", Arity = ArgumentArity.ZeroOrMore };
        var resume = new Option<string?>("--resume")
        {
            Description = "continue from the newest checkpoint in output.dir, or from the checkpoint directory given",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var cmd = new Command("train", "QLoRA fine-tuning from a YAML config");
        cmd.Arguments.Add(config);
        cmd.Arguments.Add(overrides);
        cmd.Options.Add(resume);
        cmd.SetAction(pr =>
        {
            var cfg = TrainConfig.Load(pr.GetValue(config)!, pr.GetValue(overrides) ?? []);
            LibTorchProbe.EnsureLoaded();
            string? resumeArg = pr.GetResult(resume) is null ? null : pr.GetValue(resume) ?? "latest";
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (cts.IsCancellationRequested) return; // second Ctrl-C: let the process die
                e.Cancel = true;
                cts.Cancel();
                stdout.WriteLine("Ctrl-C: finishing this step, then saving a checkpoint (Ctrl-C again aborts)");
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                var observer = new ConsoleTrainingObserver(stdout);
                var device = QLoraNet.Models.DeviceChoice.Resolve(YamlNames.Of(cfg.Model.Device), "model.device");
                var result = LoraFinetuneRecipe.Run(cfg, new TrainOptions(resumeArg, KernelChoice.For(device)), observer, cts.Token);
                observer.Finish(result);
                return result.Stop switch
                {
                    TrainStop.Interrupted => CliApp.ExitInterrupted,
                    TrainStop.NonFiniteLoss => throw new InvalidOperationException(result.Message),
                    _ => 0,
                };
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        });
        return cmd;
    }
}

/// <summary>
/// Renders a run: a summary table at start; on a terminal, a live status line rewritten every step; one kept line
/// every training.log_every steps (loss, lr, grad norm, tokens/s, ETA, host resident memory) and for every evaluation/checkpoint.
/// </summary>
sealed class ConsoleTrainingObserver(TextWriter stdout) : ITrainingObserver
{
    int logEvery = 1;
    readonly bool live = ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected;
    int liveWidth;

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
        string line = string.Create(CultureInfo.InvariantCulture,
            $"step {m.Step,5}/{m.TotalSteps}  epoch {m.Epoch:F2}  loss {m.Loss:F4}  lr {m.LearningRate:E2}  |g| {m.GradNorm:F3}  {m.TokensPerSecond,7:F0} tok/s  ETA {Eta(m.EtaSeconds)}  host rss {m.HostRssBytes / 1048576.0:F0} MiB");
        bool keep = m.Step % logEvery == 0 || m.Step == m.TotalSteps || m.Step == 1;
        if (live)
        {
            // The status line is rewritten in place; kept lines end with a newline and the next status starts fresh.
            stdout.Write("\r" + line.PadRight(liveWidth) + (keep ? "\n" : ""));
            liveWidth = keep ? 0 : line.Length;
        }
        else if (keep) stdout.WriteLine(line);
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
                + $"; adapter in {r.FinalAdapter}, metrics in {Path.Combine(r.OutputDir, RunOutput.MetricsFile)}, curve in {Path.Combine(r.OutputDir, RunOutput.LossCurveFile)}");
    }

    static string Eta(double seconds) => double.IsFinite(seconds) ? TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"h\:mm\:ss") : "-";

    void Write(Spectre.Console.Rendering.IRenderable r)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(stdout), ColorSystem = ColorSystemSupport.Detect });
        console.Write(r);
    }
}
