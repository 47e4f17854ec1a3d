// Fine-tunes the repository's tiny model from C#: the quickstart config, changed in code, with progress and Ctrl-C.
// Run from the repository root: dotnet run --project samples/FineTuneFromCode -- [steps] [output dir]
using QLoraNet;

int steps = args.Length > 0 ? int.Parse(args[0]) : 20;
string output = args.Length > 1 ? args[1] : "runs/sample-finetune";

var config = FineTuning.LoadConfig("configs/quickstart.yaml");
config = config with
{
    Training = config.Training with { MaxSteps = steps, LogEvery = 1, EvalEvery = 0, SaveEvery = 0 },
    Output = config.Output with { Dir = output },
};

using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cancel.Cancel(); };
var progress = new Progress<TrainingProgress>(p =>
{
    if (p.Kind == TrainingProgressKind.Step) Console.WriteLine($"step {p.Step}/{p.TotalSteps}  loss {p.Loss:F4}");
});

FineTuningResult result = await FineTuning.RunAsync(config, progress, cancel.Token);
Console.WriteLine($"libtorch: {result.LibTorch.Summary}");
Console.WriteLine($"adapter: {result.AdapterDirectory} after {result.Steps} steps, last loss {result.LastLoss:F4}");
