using QLoraNet.Quant.Kernels;
using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;
using static TorchSharp.torch;

namespace QLoraNet.Tests.Training;

/// <summary>The start-of-run summary reports the base format and the kernels the caller chose (one short run).</summary>
[Trait("tier", "e2e")]
[Collection("training runs")]
public class RunSummaryTests
{
    sealed class Capture : ITrainingObserver
    {
        public RunSummary? Summary;
        public void OnStart(RunSummary summary) => Summary = summary;
        public void OnStep(StepMetrics metrics) { }
        public void OnEvaluation(int step, double validationLoss, bool isBest) { }
        public void OnCheckpoint(int step, string directory) { }
        public void OnMessage(string message) { }
    }

    [Fact]
    public void The_summary_names_the_base_format_and_the_kernel_choice_with_its_reason()
    {
        using var tmp = Paths.Temp();
        var config = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml"),
        [
            $"model.path={Paths.TinyModel}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "sales", "train.jsonl")}",
            "data.validation=null", "data.max_seq_len=64", "training.micro_batch_size=1", "training.gradient_accumulation_steps=1",
            "training.max_steps=1", "training.save_every=0", "training.eval_every=0", "model.device=cpu", $"output.dir={tmp["run"]}",
        ]);
        var capture = new Capture();
        LoraFinetuneRecipe.Run(config, new TrainOptions(Kernels: KernelSelection.Reference(CPU)), capture, CancellationToken.None);
        Assert.Equal("nf4-dq", capture.Summary!.BaseFormat);
        Assert.Equal("nf4/fp4 dequant on cpu: torch-ops (reference path requested)", capture.Summary.Kernels![0]);
    }
}
