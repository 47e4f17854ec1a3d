using QLoraNet.Evaluation;
using QLoraNet.Evaluation.Config;
using QLoraNet.Evaluation.Metrics;

namespace QLoraNet.Tests.Evaluation;

/// <summary>acc, acc_norm and acc_bytes on a 3-question example computed by hand; stderr as the harness's
/// mean_stderr; group pooling; exact_match with the GSM8K options; the regex filter's findall semantics.</summary>
[Trait("tier", "unit")]
public class MetricTests
{
    const string Yaml = """
        task: three
        dataset_path: DATA_DIR
        test_split: test
        output_type: multiple_choice
        doc_to_text: "Q: {{q}}\nA:"
        doc_to_target: gold
        doc_to_choice: "{{choices}}"
        metric_list: [{metric: acc}, {metric: acc_norm}, {metric: acc_bytes}]
        """;

    const string Rows = """
        {"q": "Which animal is bigger?", "choices": ["cat", "elephant"], "gold": 1}
        {"q": "Is water wet?", "choices": ["yes", "no"], "gold": 0}
        {"q": "What colour is grass?", "choices": ["red", "blue", "grün"], "gold": 2}
        """;

    // By hand: row 1 lls -4, -6: acc picks "cat" (0, wrong); per character -4/3 = -1.33 < -6/8 = -0.75, so acc_norm
    // picks "elephant" (right). Row 2 lls -1, -2: both pick "yes" (right). Row 3 lls -3, -3.5, -3.9: acc picks "red";
    // per character -1, -0.875, -0.975 picks "blue" (wrong); per UTF-8 byte ("grün" is 4 characters, 5 bytes)
    // -1, -0.875, -0.78 picks "grün" (right).
    static readonly Dictionary<string, double> Lls = new()
    {
        [" cat"] = -4, [" elephant"] = -6, [" yes"] = -1, [" no"] = -2, [" red"] = -3, [" blue"] = -3.5, [" grün"] = -3.9,
    };

    [Fact]
    public void Acc_acc_norm_and_acc_bytes_on_three_questions()
    {
        using var dir = Paths.Temp();
        string task = EvalFixtures.WriteTask(dir, Yaml, Rows);
        var model = new MockScoringModel((_, cont) => Lls[cont]);
        var r = EvalRunner.Run(model, TaskCatalog.BuiltIn().Resolve([task]), new EvalOptions()).Tasks[0];

        Assert.Equal(3, r.Samples);
        Assert.Equal(1.0 / 3, r.Metrics["acc,none"].Value, 12);        // [0, 1, 0]
        Assert.Equal(2.0 / 3, r.Metrics["acc_norm,none"].Value, 12);   // [1, 1, 0]
        Assert.Equal(1.0, r.Metrics["acc_bytes,none"].Value, 12);      // [1, 1, 1]
        // sample sd of [0, 1, 0] is sqrt(1/3); / sqrt(3) = 1/3. Of [1, 1, 1]: 0.
        Assert.Equal(1.0 / 3, r.Metrics["acc,none"].Stderr!.Value, 12);
        Assert.Equal(1.0 / 3, r.Metrics["acc_norm,none"].Stderr!.Value, 12);
        Assert.Equal(0.0, r.Metrics["acc_bytes,none"].Stderr!.Value, 12);
        Assert.Equal(7, model.Requests.Count);
    }

    [Fact]
    public void Ties_go_to_the_first_choice_like_numpy_argmax()
    {
        Assert.Equal(0, ChoiceMetrics.ArgMax([-1.0, -1.0, -2.0]));
        Assert.Equal(1, ChoiceMetrics.ArgMax([-3.0, -1.0, -1.0]));
    }

    [Fact]
    public void Pooled_stderr_of_two_groups_equals_the_stderr_of_all_rows()
    {
        double[] a = [1, 0, 1, 1], b = [0, 0, 1];
        var pooled = MeanAndStderr.Pooled([MeanAndStderr.Of(a), MeanAndStderr.Of(b)], weightBySize: true);
        var all = MeanAndStderr.Of([.. a, .. b]);
        Assert.Equal(all.Value, pooled.Value, 12);
        Assert.Equal(7, pooled.Count);
        // The harness's pooled formula ignores the between-group variance: close to, not equal to, the direct one.
        Assert.Equal(Math.Sqrt((3 * 4 * Math.Pow(MeanAndStderr.Of(a).Stderr!.Value, 2) + 2 * 3 * Math.Pow(MeanAndStderr.Of(b).Stderr!.Value, 2)) / 5 / 7),
            pooled.Stderr!.Value, 12);
        Assert.Null(MeanAndStderr.Of([1.0]).Stderr);
    }

    [Fact]
    public void Exact_match_with_gsm8k_options()
    {
        var gsm = new MetricSpec("exact_match", IgnoreCase: true, RegexesToIgnore: [",", "\\$", "(?s).*#### ", "\\.$"]);
        Assert.Equal(1, ExactMatch.Score(gsm, "1,234", "So the total is 1234.\n#### 1,234"));
        Assert.Equal(1, ExactMatch.Score(gsm, "$18.", "#### 18"));
        Assert.Equal(0, ExactMatch.Score(gsm, "[invalid]", "#### 18"));
        Assert.Equal(1, ExactMatch.Score(new MetricSpec("exact_match", IgnorePunctuation: true), "Paris!", "Paris"));
        Assert.Equal(0, ExactMatch.Score(new MetricSpec("exact_match"), "Paris!", "Paris"));
    }

    [Fact]
    public void Regex_filter_takes_findall_groups_like_python()
    {
        var strict = new FilterPipeline("strict-match", [new FilterStep("regex", @"#### (\-?[0-9\.\,]+)"), new FilterStep("take_first")]);
        var flexible = new FilterPipeline("flexible-extract", [new FilterStep("regex", "(-?[$0-9.,]{2,})|(-?[0-9]+)", GroupSelect: -1)]);
        Assert.Equal("72", AnswerFilters.Apply(strict, "so 72.\n#### 72"));
        Assert.Equal("[invalid]", AnswerFilters.Apply(strict, "the answer is 72"));
        Assert.Equal("$1,200", AnswerFilters.Apply(flexible, "first 3 then $1,200"));   // last match, group 1
        Assert.Equal("5", AnswerFilters.Apply(flexible, "10 apples, 5"));              // last match, group 2 (group 1 empty)
    }

    /// <summary>A task's own pattern with nested quantifiers backtracks exponentially on a long answer: the evaluation
    /// stops with an error naming the pattern instead of hanging (TaskRegex's time limit), and an invalid pattern in a
    /// template's regex_replace is a task error, not a crash.</summary>
    [Fact]
    public void A_backtracking_pattern_fails_naming_it_and_a_bad_template_pattern_is_a_task_error()
    {
        string answer = new string('a', 40) + "!";   // (a+)+$ tries every split of the run of a's: 2^40 paths
        var filter = new FilterPipeline("slow", [new FilterStep("regex", "(a+)+$")]);
        var e = Assert.Throws<TaskException>(() => AnswerFilters.Apply(filter, answer));
        Assert.Contains("'(a+)+$' ran longer than", e.Message);
        var ignore = new MetricSpec("exact_match", RegexesToIgnore: ["(a|aa)+$"]);
        Assert.Contains("'(a|aa)+$' ran longer than", Assert.Throws<TaskException>(() => ExactMatch.Score(ignore, answer, "x")).Message);

        var bad = Assert.Throws<TaskException>(() => ExactMatch.Score(new MetricSpec("exact_match", RegexesToIgnore: ["(a"]), "a", "a"));
        Assert.Contains("'(a' is not a valid regular expression", bad.Message);
        Assert.Null(TaskRegex.Invalid(@"#### (\-?[0-9\.\,]+)"));
        Assert.NotNull(TaskRegex.Invalid("[z-a]"));
    }

    [Fact]
    public void A_group_file_aggregates_its_tasks_by_size()
    {
        using var dir = Paths.Temp();
        Directory.CreateDirectory(dir["a"]);
        Directory.CreateDirectory(dir["b"]);
        File.WriteAllText(dir["a/test.jsonl"], Rows);                         // acc [0, 1, 0]
        File.WriteAllText(dir["b/test.jsonl"], """{"q": "Is water wet?", "choices": ["yes", "no"], "gold": 0}""");   // acc [1]
        File.WriteAllText(dir["task_a.yaml"], Yaml.Replace("task: three", "task: part_a").Replace("DATA_DIR", dir["a"]));
        File.WriteAllText(dir["task_b.yaml"], Yaml.Replace("task: three", "task: part_b").Replace("DATA_DIR", dir["b"]));
        File.WriteAllText(dir["group.yaml"], "group: both\ntask: [part_a, part_b]\naggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n");
        var r = EvalRunner.Run(new MockScoringModel((_, cont) => Lls[cont]), TaskCatalog.BuiltIn().Resolve([dir["group.yaml"]]), new EvalOptions());
        var g = Assert.Single(r.Groups);
        Assert.Equal(["part_a", "part_b"], g.Tasks);
        Assert.Equal(2.0 / 4, g.Metrics["acc,none"].Value, 12);               // (1 + 1) / 4 rows
        Assert.Equal(4, g.Samples);
        Assert.Equal(2.0 / 4, r.Average().Value, 12);                          // the group is the one requested entry
    }
}
