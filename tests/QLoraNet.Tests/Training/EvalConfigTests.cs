using QLoraNet.Training.Config;

namespace QLoraNet.Tests.Training;

/// <summary>The <c>eval:</c> section of a training config: bound, validated with the rest of the config (task names
/// resolved at once) and written back into the resolved config.</summary>
[Trait("tier", "unit")]
public class EvalConfigTests
{
    static readonly string Quickstart = Path.Combine(Paths.RepoRoot, "configs", "quickstart.yaml");
    static readonly string SalesData = Path.Combine(Paths.RepoRoot, "datasets", "sales");

    static string[] Here => [$"model.path={Paths.TinyModel}", $"data.train={Path.Combine(SalesData, "train.jsonl")}",
        $"data.validation={Path.Combine(SalesData, "validation.jsonl")}"];

    [Fact]
    public void Eval_section_parses_and_round_trips()
    {
        var c = TrainConfig.Parse(File.ReadAllText(Quickstart) + "\neval:\n  tasks: [sales_mc]\n  limit: 20\n  task_data: [sales_mc=datasets/sales]\n", "q.yaml", Here);
        Assert.Equal(["sales_mc"], c.EvalTasks.Tasks);
        Assert.Equal(20, c.EvalTasks.Limit);
        Assert.Equal("datasets/sales", c.EvalTasks.TaskDataMap["sales_mc"]);
        Assert.Equal(c.EvalTasks.Tasks, TrainConfig.Parse(c.ToYaml(), "resolved.yaml").EvalTasks.Tasks);
        Assert.Empty(TrainConfig.Load(Quickstart, Here).EvalTasks.Tasks);
        Assert.DoesNotContain("eval:", TrainConfig.Load(Quickstart, Here).ToYaml());
    }

    [Fact]
    public void Bad_eval_keys_and_tasks_are_one_line_errors()
    {
        string yaml = File.ReadAllText(Quickstart);
        int line = yaml.Split('\n').Length + 2;
        var unknown = Assert.Throws<ConfigException>(() => TrainConfig.Parse(yaml + "\neval:\n  taks: [sales_mc]\n", "q.yaml", Here));
        Assert.Equal($"q.yaml:{line}: unknown key 'eval.taks'; valid keys in 'eval': tasks, limit, batch_size, num_fewshot, task_data", unknown.Message);
        var task = Assert.Throws<ConfigException>(() => TrainConfig.Parse(yaml + "\neval:\n  tasks: [sales_mcq]\n", "q.yaml", Here));
        Assert.StartsWith($"q.yaml:{line}: 'eval.tasks': unknown task 'sales_mcq'", task.Message);
        var data = Assert.Throws<ConfigException>(() => TrainConfig.Parse(yaml + "\neval:\n  tasks: [sales_mc]\n  task_data: [sales_mc]\n", "q.yaml", Here));
        Assert.Contains("entries must read NAME=PATH", data.Message);
    }
}
