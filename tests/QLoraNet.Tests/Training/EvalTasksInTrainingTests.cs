using QLoraNet.Training.Config;
using QLoraNet.Training.Recipes;
using QLoraNet.Training.Trainer;

namespace QLoraNet.Tests.Training;

/// <summary>The <c>eval:</c> section in a short run: tasks scored before the first step, every eval_every and at the
/// end, into metrics.csv columns, the log and the result.</summary>
[Collection("training runs")]
[Trait("tier", "e2e")]
public class EvalTasksInTrainingTests
{
    static readonly string Quickstart = Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml");
    static readonly string SalesData = Path.Combine(Paths.RepoRoot, "datasets", "sales");

    [Fact]
    public void Tasks_are_scored_before_during_and_after_training()
    {
        using var tmp = Paths.Temp();
        var config = TrainConfig.Load(Quickstart, [
            $"model.path={Paths.TinyModel}", $"data.train={Path.Combine(SalesData, "train.jsonl")}", "data.validation=null",
            "data.max_seq_len=64", "data.packing=false", "training.micro_batch_size=1", "training.gradient_accumulation_steps=1",
            "training.max_steps=2", "training.eval_every=1", "training.save_every=0", "training.warmup_steps=0",
            $"output.dir={tmp["run"]}", "eval.tasks=[sales_mc]", "eval.limit=2", $"eval.task_data=[sales_mc={SalesData}]",
        ]);
        var messages = new List<string>();
        var result = LoraFinetuneRecipe.Run(config, new TrainOptions(), new MessageObserver(messages), CancellationToken.None);

        Assert.Equal(TrainStop.Completed, result.Stop);
        Assert.Equal(["sales_mc/acc", "sales_mc/acc_norm"], result.TaskScores!.Keys.Order());
        Assert.Equal(result.TaskScores.Keys.Order(), result.InitialTaskScores!.Keys.Order());
        Assert.All(result.TaskScores.Values, v => Assert.Contains(v, new[] { 0.0, 0.5, 1.0 }));   // 2 rows
        Assert.Equal(3, messages.Count(m => m.StartsWith("tasks step")));                         // 0, 1, 2
        var rows = MetricsLog.Read(Path.Combine(tmp["run"], RunOutput.MetricsFile));
        Assert.Equal([1, 2], rows.Select(r => r.Step));
        Assert.All(rows, r => Assert.Equal(2, r.TaskScores!.Count));
        Assert.Equal(result.TaskScores["sales_mc/acc"], rows[^1].TaskScores!["sales_mc/acc"]);
        Assert.StartsWith("step,epoch,loss,val_loss,", File.ReadLines(Path.Combine(tmp["run"], RunOutput.MetricsFile)).First());
        Assert.EndsWith(",sales_mc/acc,sales_mc/acc_norm", File.ReadLines(Path.Combine(tmp["run"], RunOutput.MetricsFile)).First());

        // The final summary `train` prints: each score after training with the base model's beside it.
        var summary = new StringWriter();
        new QLoraNet.Cli.ConsoleTrainingObserver(summary).Finish(result);
        string F(double v) => v.ToString("F4", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"tasks: sales_mc/acc {F(result.TaskScores["sales_mc/acc"])} (base model {F(result.InitialTaskScores["sales_mc/acc"])}), "
            + $"sales_mc/acc_norm {F(result.TaskScores["sales_mc/acc_norm"])} (base model {F(result.InitialTaskScores["sales_mc/acc_norm"])})", summary.ToString());
    }

    [Theory]
    [InlineData("qwen2")]    // byte-level BPE tokenizer.json, no BOS: the prefix token is EOS
    [InlineData("gemma2")]   // SentencePiece, soft-capped logits, sliding window
    public void A_family_fine_tune_scores_its_tasks_through_its_own_tokenizer(string family)
    {
        using var tmp = Paths.Temp();
        string fixture = Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", family);
        var config = TrainConfig.Load(Path.Combine(Paths.RepoRoot, "configs", "tests", $"{family}-tiny.yaml"), [
            $"model.path={fixture}", $"data.train={Path.Combine(Paths.RepoRoot, "datasets", "general", "heldout.jsonl")}",
            "training.max_steps=1", "training.eval_every=1", "training.save_every=0", $"output.dir={tmp["run"]}",
            "eval.tasks=[sales_mc]", "eval.limit=4", $"eval.task_data=[sales_mc={SalesData}]",
        ]);
        var messages = new List<string>();
        var result = LoraFinetuneRecipe.Run(config, new TrainOptions(), new MessageObserver(messages), CancellationToken.None);

        Assert.Equal(TrainStop.Completed, result.Stop);
        Assert.Equal(["sales_mc/acc", "sales_mc/acc_norm"], result.InitialTaskScores!.Keys.Order());
        Assert.All(result.TaskScores!.Values.Concat(result.InitialTaskScores.Values), v => Assert.Contains(v, new[] { 0.0, 0.25, 0.5, 0.75, 1.0 }));   // 4 rows
        Assert.Contains(messages, m => m.StartsWith("tasks step") && m.Contains("sales_mc/acc"));
        var rows = MetricsLog.Read(Path.Combine(tmp["run"], RunOutput.MetricsFile));
        Assert.Equal(result.TaskScores["sales_mc/acc"], rows[^1].TaskScores!["sales_mc/acc"]);
    }
}
