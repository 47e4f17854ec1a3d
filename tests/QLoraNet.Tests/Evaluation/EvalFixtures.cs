using QLoraNet.Evaluation;

namespace QLoraNet.Tests.Evaluation;

/// <summary>Paths of tests/fixtures/eval and a one-call way to run a built-in or file task on the mock model.</summary>
public static class EvalFixtures
{
    public static string Dir => Path.Combine(Paths.RepoRoot, "tests", "fixtures", "eval");
    public static string Path_(string relative) => Path.Combine(Dir, relative);

    public static EvalResults Run(MockScoringModel model, string task, string? dataDir, EvalOptions? options = null)
    {
        var selection = TaskCatalog.BuiltIn().Resolve([task]);
        var data = dataDir is null ? null : new Dictionary<string, string> { [task] = Path_(dataDir) };
        return EvalRunner.Run(model, selection, options ?? new EvalOptions(), data);
    }

    /// <summary>Writes a task YAML (and its data) into a temp dir and returns its path.</summary>
    public static string WriteTask(TempDir dir, string yaml, string? dataJsonl = null, string dataName = "test.jsonl")
    {
        if (dataJsonl != null) File.WriteAllText(dir[dataName], dataJsonl);
        string path = dir["task.yaml"];
        File.WriteAllText(path, yaml.Replace("DATA_DIR", dir.Path));
        return path;
    }
}
