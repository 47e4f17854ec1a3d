using System.Text.Json;

namespace QLoraNet.Tests.Cli;

/// <summary>`eval --tasks` end to end on the tiny model: the results JSON in the harness's layout, the file, the
/// table, and one-line errors for bad options.</summary>
[Trait("tier", "e2e")]
public class EvalTasksTests
{
    static readonly string SalesData = Path.Combine(Paths.RepoRoot, "datasets", "sales");

    [Fact]
    public void Sales_mc_json_and_results_file()
    {
        using var dir = Paths.Temp();
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--device", "cpu", "--tasks", "sales_mc",
            "--task-data", $"sales_mc={SalesData}", "--limit", "6", "--batch-size", "4", "--json", "--output", dir["r/results.json"]);
        Assert.True(code == 0, stderr);
        var json = JsonDocument.Parse(stdout).RootElement;
        var sales = json.GetProperty("results").GetProperty("sales_mc");
        double acc = sales.GetProperty("acc,none").GetDouble();
        Assert.InRange(acc, 0, 1);
        Assert.Equal(0, Math.Round(acc * 6) - acc * 6, 9);                       // a count out of 6 rows
        Assert.True(sales.GetProperty("acc_stderr,none").GetDouble() >= 0);
        Assert.Equal(6, json.GetProperty("n-samples").GetProperty("sales_mc").GetProperty("effective").GetInt32());
        Assert.Equal("none", json.GetProperty("config").GetProperty("quantization").GetString());
        var file = JsonDocument.Parse(File.ReadAllText(dir["r/results.json"])).RootElement;
        Assert.Equal(acc, file.GetProperty("results").GetProperty("sales_mc").GetProperty("acc,none").GetDouble());
        Assert.False(json.TryGetProperty("samples", out _));

        var logged = CliRunner.Run("eval", "--model", Paths.TinyModel, "--device", "cpu", "--tasks", "sales_mc",
            "--task-data", $"sales_mc={SalesData}", "--limit", "2", "--json", "--log-samples");
        var samples = JsonDocument.Parse(logged.Stdout).RootElement.GetProperty("samples").GetProperty("sales_mc");
        Assert.Equal(2, samples.GetArrayLength());
        Assert.Equal(4, samples[0].GetProperty("loglikelihoods").GetArrayLength());
        Assert.EndsWith("mc_test.jsonl:1", samples[0].GetProperty("origin").GetString());
        Assert.Equal(1, samples[0].GetProperty("target").GetInt32());                // the first row's gold index
        Assert.Equal(samples[0].GetProperty("loglikelihoods").EnumerateArray().Select(e => e.GetDouble()).ToList()
            .IndexOf(samples[0].GetProperty("loglikelihoods").EnumerateArray().Max(e => e.GetDouble())) == 1 ? 1.0 : 0.0,
            samples[0].GetProperty("metrics").GetProperty("acc,none").GetDouble());
    }

    [Fact]
    public void Table_lists_each_metric_with_its_stderr()
    {
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--device", "cpu", "--quantization", "nf4-dq",
            "--tasks", "sales_mc", "--task-data", $"sales_mc={SalesData}", "--limit", "3");
        Assert.True(code == 0, stderr);
        Assert.Matches(@"sales_mc\s+0\s+acc\s+[01]\.\d{4}\s+± \d\.\d{4}\s+3", stdout);
        Assert.Matches(@"sales_mc\s+0\s+acc_norm\s+", stdout);
        Assert.Contains("base nf4-dq", stdout);
    }

    [Fact]
    public void Apply_chat_template_asks_generative_tasks_in_the_models_chat_format()
    {
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Paths.TinyModel, "--device", "cpu", "--tasks", "gsm8k",
            "--task-data", $"gsm8k={Path.Combine(Paths.RepoRoot, "tests", "fixtures", "eval", "gsm8k")}", "--num-fewshot", "0",
            "--limit", "1", "--apply-chat-template", "--json", "--log-samples");
        Assert.True(code == 0, stderr);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("llama2-chat", json.GetProperty("config").GetProperty("apply_chat_template").GetString());   // auto: no shipped template
        Assert.Equal(JsonValueKind.String, json.GetProperty("samples").GetProperty("gsm8k")[0].GetProperty("generation").ValueKind);

        var alpaca = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", "gsm8k", "--apply-chat-template", "--chat-template", "alpaca");
        Assert.Equal("error: the alpaca template renders instruction rows only; choose a chat template", alpaca.Stderr.TrimEnd());
    }

    [Theory]
    [InlineData("llama3")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("gemma")]
    [InlineData("gemma2")]
    public void Every_family_scores_multiple_choice_and_generates_in_nf4_dq(string family)
    {
        // The CLI's path end to end on each family fixture: its config.json and tokenizer (SentencePiece or
        // tokenizer.json), a 4-bit base, a log-likelihood task and a generative one.
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", Path.Combine(Paths.RepoRoot, "tests", "fixtures", "families", family),
            "--device", "cpu", "--quantization", "nf4-dq", "--tasks", "sales_mc,gsm8k", "--task-data", $"sales_mc={SalesData}",
            "--task-data", $"gsm8k={Path.Combine(Paths.RepoRoot, "tests", "fixtures", "eval", "gsm8k")}", "--num-fewshot", "0",
            "--limit", "3", "--batch-size", "2", "--json", "--log-samples");
        Assert.True(code == 0, $"{family}: {stderr}");
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("nf4-dq", json.GetProperty("config").GetProperty("quantization").GetString());
        var mc = json.GetProperty("samples").GetProperty("sales_mc");
        Assert.Equal(3, mc.GetArrayLength());
        foreach (var sample in mc.EnumerateArray())
        {
            var lls = sample.GetProperty("loglikelihoods").EnumerateArray().Select(e => e.GetDouble()).ToList();
            Assert.Equal(4, lls.Count);
            Assert.All(lls, ll => Assert.True(double.IsFinite(ll) && ll < 0, $"{family}: log-likelihood {ll}"));
            Assert.True(lls.Distinct().Count() > 1, $"{family}: every choice scored the same");
        }
        double acc = json.GetProperty("results").GetProperty("sales_mc").GetProperty("acc,none").GetDouble();
        Assert.Equal(0, Math.Round(acc * 3) - acc * 3, 9);                       // a count out of 3 rows
        var gen = json.GetProperty("samples").GetProperty("gsm8k");
        Assert.Equal(1, gen.GetArrayLength());                                  // the fixture's one test row
        Assert.All(gen.EnumerateArray(), g => Assert.Equal(JsonValueKind.String, g.GetProperty("generation").ValueKind));
    }

    [Fact]
    public void Bad_options_are_one_line_errors()
    {
        var unknown = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", "sales_mcq");
        Assert.Equal(1, unknown.Code);
        Assert.StartsWith("error: unknown task 'sales_mcq'; built-in tasks and groups:", unknown.Stderr);

        var both = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", "sales_mc", "--text-file", "x.txt");
        Assert.Equal("error: --tasks scores tasks; leave out --text-file, --token-ids-json and --data", both.Stderr.TrimEnd());

        var data = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", "sales_mc", "--task-data", "sales_mc");
        Assert.Contains("--task-data 'sales_mc' must read NAME=PATH", data.Stderr);

        var other = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", "sales_mc", "--task-data", $"arc_easy={SalesData}");
        Assert.Contains("--task-data arc_easy=...: 'arc_easy' is none of the selected tasks", other.Stderr);

        var batch = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", "sales_mc", "--batch-size", "0");
        Assert.Equal("error: --batch-size 0 must be at least 1", batch.Stderr.TrimEnd());
    }

    /// <summary>A task file or task data the bounded readers refuse: one line naming the file, exit 1, no stack trace.</summary>
    [Fact]
    public void Malformed_task_files_and_data_are_one_line_errors()
    {
        using var dir = Paths.Temp();
        File.WriteAllBytes(dir["bad.yaml"], [.. System.Text.Encoding.UTF8.GetBytes("task: x\n"), 0xC3, 0x28]);
        var yaml = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", dir["bad.yaml"]);
        Assert.Equal(1, yaml.Code);
        Assert.StartsWith($"error: {dir["bad.yaml"]}:2: not valid UTF-8 text", yaml.Stderr);
        Assert.Single(yaml.Stderr.TrimEnd().Split('\n'));

        File.WriteAllText(dir["task.yaml"], $"task: t\ndataset_path: {dir.Path}\ntest_split: test\noutput_type: multiple_choice\n"
            + "doc_to_text: \"{{q}}\"\ndoc_to_target: 0\ndoc_to_choice: \"{{choices}}\"\n");
        File.WriteAllBytes(dir["test.jsonl"], [.. "{\"q\": \"a\", \"choices\": [\"b\", \"c\"]}\n"u8, 0xFF, (byte)'\n']);
        var data = CliRunner.Run("eval", "--model", Paths.TinyModel, "--tasks", dir["task.yaml"]);
        Assert.Equal(1, data.Code);
        Assert.StartsWith($"error: {dir["test.jsonl"]}:2: not valid UTF-8", data.Stderr);
        Assert.Single(data.Stderr.TrimEnd().Split('\n'));
    }
}
